//! Line charts written as SVG and PNG with plotters' pure-Rust backends. Text is drawn with an
//! embedded ASCII subset of DejaVu Sans (`assets/DejaVuSans-ascii.ttf`, Bitstream Vera licence,
//! see `assets/LICENSE-DejaVu.txt`), so no system font or C library is needed.
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ReportError;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The font is compiled in and known to parse (tested); a failure would only lose text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// (x, y) points in x order; non-finite y values break the line.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 480;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if (hi - lo).abs() < 1e-12 {
        return Some((lo - 1.0, hi + 1.0));
    }
    let pad = 0.05 * (hi - lo);
    Some((lo - pad, hi + pad))
}

/// Split a series at non-finite values into drawable runs.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            out.last_mut().expect("never empty").push((x, y));
        } else if !out.last().expect("never empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// A drawing backend's failure.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct DrawError(Box<dyn std::error::Error + Send + Sync>);

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| DrawError(Box::new(e));
    root.fill(&WHITE).map_err(e)?;
    let xs = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let ys = range(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| p.0.is_finite()).map(|p| p.1)),
    );
    let (Some((x0, x1)), Some((y0, y1))) = (xs, ys) else {
        root.draw(&Text::new(
            format!("{title}: no finite values to plot"),
            (20, 40),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(e)?;
        return root.present().map_err(e);
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_label_formatter(&|x| {
            if x.fract().abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .y_desc(y_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let segs = segments(&s.points);
        for (k, seg) in segs.iter().enumerate() {
            let style = color.stroke_width(2);
            if seg.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(seg[0], 3, color.filled())))
                    .map_err(e)?;
            } else {
                let a = chart
                    .draw_series(LineSeries::new(seg.iter().copied(), style))
                    .map_err(e)?;
                if k == 0 {
                    a.label(s.name.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
                continue;
            }
            if k == 0 {
                // single-point first segment: still give the series a legend entry
                chart
                    .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                    .map_err(e)?
                    .label(s.name.clone())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
            }
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// Draw `series` as `<stem>.svg` and `<stem>.png`; returns both paths.
pub fn line_chart(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(PathBuf, PathBuf), ReportError> {
    register_font();
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let fail = |p: &Path, m: String| ReportError::Plot {
        path: p.to_path_buf(),
        msg: m,
    };
    draw(
        SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area(),
        title,
        x_label,
        y_label,
        series,
    )
    .map_err(|m| fail(&svg, m.to_string()))?;
    draw(
        BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area(),
        title,
        x_label,
        y_label,
        series,
    )
    .map_err(|m| fail(&png, m.to_string()))?;
    Ok((svg, png))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_parses_and_segments_split_on_nan() {
        assert!(plotters::style::register_font("t", FontStyle::Normal, FONT).is_ok());
        let s = segments(&[(0.0, 1.0), (1.0, f64::NAN), (2.0, 2.0), (3.0, 3.0)]);
        assert_eq!(s, vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]);
        assert_eq!(range([1.0, 1.0].into_iter()), Some((0.0, 2.0)));
        assert_eq!(range([f64::NAN].into_iter()), None);
    }

    #[test]
    fn writes_svg_and_png_with_text() {
        let d = tempfile::tempdir().unwrap();
        let series = vec![
            Series {
                name: "planner".into(),
                points: (1..=20).map(|i| (i as f64, (i as f64).sin())).collect(),
            },
            Series {
                name: "executor".into(),
                points: vec![(1.0, f64::NAN), (2.0, 0.5)],
            },
        ];
        let (svg, png) =
            line_chart(&d.path().join("r"), "Rewards", "step", "reward", &series).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..40.min(text.len())]);
        assert!(text.contains("Rewards") && text.contains("planner"));
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // an all-NaN chart still renders (with a note instead of axes)
        let (svg, _) = line_chart(
            &d.path().join("empty"),
            "Empty",
            "step",
            "y",
            &[Series {
                name: "x".into(),
                points: vec![(1.0, f64::NAN)],
            }],
        )
        .unwrap();
        assert!(std::fs::read_to_string(svg)
            .unwrap()
            .contains("no finite values"));
    }
}
