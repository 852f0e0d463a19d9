//! A safe arithmetic expression evaluator for the `calculate` tool: numbers, `+ - * / %`, `^`
//! (power, right-associative), unary minus and parentheses. No names, no code: anything else is
//! an error. Input length and nesting depth are bounded.

/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 256;
const MAX_DEPTH: usize = 32;

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalcError {
    #[error("expression longer than {MAX_EXPR_LEN} characters")]
    TooLong,
    #[error("unexpected character at position {0}")]
    UnexpectedChar(usize),
    #[error("unexpected end of expression")]
    UnexpectedEnd,
    #[error("result is not a finite number")]
    NotFinite,
    #[error("division by zero")]
    DivisionByZero,
    #[error("expression nested too deeply")]
    TooDeep,
    #[error("missing ')'")]
    MissingParen,
    #[error("bad number {0:?}")]
    BadNumber(String),
}

/// Evaluate `expr`; errors name what is wrong.
pub fn eval(expr: &str) -> Result<f64, CalcError> {
    if expr.len() > MAX_EXPR_LEN {
        return Err(CalcError::TooLong);
    }
    let mut p = Parser {
        s: expr.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.expr()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(CalcError::UnexpectedChar(p.i));
    }
    if !v.is_finite() {
        return Err(CalcError::NotFinite);
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut v = self.term()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let r = self.term()?;
            v = if c == b'+' { v + r } else { v - r };
        }
        Ok(v)
    }
    fn term(&mut self) -> Result<f64, CalcError> {
        let mut v = self.unary()?;
        while let Some(c @ (b'*' | b'/' | b'%')) = self.peek() {
            self.i += 1;
            let r = self.unary()?;
            v = match c {
                b'*' => v * r,
                _ if r == 0.0 => return Err(CalcError::DivisionByZero),
                b'/' => v / r,
                _ => v % r,
            };
        }
        Ok(v)
    }
    fn unary(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            Some(b'-') => {
                self.i += 1;
                self.enter()?;
                let v = self.unary();
                self.depth -= 1;
                Ok(-v?)
            }
            Some(b'+') => {
                self.i += 1;
                self.enter()?;
                let v = self.unary();
                self.depth -= 1;
                v
            }
            _ => self.power(),
        }
    }
    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.atom()?;
        if self.peek() == Some(b'^') {
            self.i += 1;
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            return Ok(base.powf(e?));
        }
        Ok(base)
    }
    fn enter(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        Ok(())
    }
    fn atom(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                self.enter()?;
                let v = self.expr();
                self.depth -= 1;
                let v = v?;
                if self.peek() != Some(b')') {
                    return Err(CalcError::MissingParen);
                }
                self.i += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'.')
                {
                    self.i += 1;
                }
                // Only ASCII digits and dots were consumed, so the slice is valid UTF-8.
                let t = String::from_utf8_lossy(&self.s[start..self.i]);
                t.parse::<f64>()
                    .map_err(|_| CalcError::BadNumber(t.into_owned()))
            }
            Some(_) => Err(CalcError::UnexpectedChar(self.i)),
            None => Err(CalcError::UnexpectedEnd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::eval;

    #[test]
    fn precedence_and_parens() {
        assert_eq!(eval("1 + 2 * 3").unwrap(), 7.0);
        assert_eq!(eval("(1 + 2) * 3").unwrap(), 9.0);
        assert_eq!(eval("-2 ^ 2").unwrap(), -4.0);
        assert_eq!(eval("2 ^ 3 ^ 2").unwrap(), 512.0);
        assert_eq!(eval("7 % 4 + 0.5").unwrap(), 3.5);
        assert_eq!(eval("10 / 4").unwrap(), 2.5);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(eval("1 / 0").is_err());
        assert!(eval("import os").is_err());
        assert!(eval("(1 + 2").is_err());
        assert!(eval("1 +").is_err());
        assert!(eval("1.2.3").is_err());
        assert!(eval(&"(".repeat(100)).is_err());
        assert!(eval(&"-".repeat(100)).is_err());
        assert!(eval(&"1+".repeat(200)).is_err());
        assert!(eval("10 ^ 400").is_err());
    }
}
