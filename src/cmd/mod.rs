//! One module per subcommand.
pub mod bench;
pub mod cases;
pub mod debug;
pub mod eval;
pub mod generate;
pub mod index;
pub mod inspect;
pub mod pretrain;
pub mod replay;
pub mod report;
pub mod score;
pub mod serve;
pub mod sft;
pub mod train;
