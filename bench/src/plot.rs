//! `results.png`: medians as grouped bars (rust, runc) with min–max whiskers,
//! in three panels: latency, throughput and idle memory.
//!
//! Text goes through plotters' `ab_glyph` renderer with DejaVu Sans read at
//! run time (Debian's fonts-dejavu-core), so no freetype or fontconfig is
//! linked.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::bench::Results;
use crate::stats::Summary;

const FONTS: [(&str, FontStyle); 2] = [
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        FontStyle::Normal,
    ),
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        FontStyle::Bold,
    ),
];
const FONT: &str = "sans-serif";
const RUST_COLOR: RGBColor = RGBColor(222, 95, 40);
const RUNC_COLOR: RGBColor = RGBColor(55, 110, 185);
const SIZE: (u32, u32) = (1500, 650);

/// A bar: median, with min and max for the whisker.
#[derive(Clone, Copy)]
struct Bar {
    mid: f64,
    lo: f64,
    hi: f64,
}

impl Bar {
    fn of(s: Option<Summary>) -> Option<Bar> {
        s.map(|s| Bar {
            mid: s.median,
            lo: s.min,
            hi: s.max,
        })
    }

    /// A mean with its range.
    fn mean_of(s: Option<Summary>) -> Option<Bar> {
        s.map(|s| Bar {
            mid: s.mean,
            lo: s.min,
            hi: s.max,
        })
    }
}

/// A group of two bars, rust then runc, and the value issue #7 asks the
/// rust bar to stay under, drawn as a dashed line across it.
struct Group {
    label: String,
    bars: [Option<Bar>; 2],
    target: Option<f64>,
}

/// Half of runc's median: the target of #7 for the time ratios.
fn half_of_runc(bars: &[Option<Bar>; 2]) -> Option<f64> {
    bars[1].map(|b| b.mid * crate::report::RATIO_TARGET)
}

fn register_fonts() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for (path, style) in FONTS {
            let loaded = std::fs::read(path)
                .map_err(|e| format!("{path}: {e} (apt-get install fonts-dejavu-core)"))
                .and_then(|bytes| {
                    // plotters keeps fonts for the life of the program.
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    register_font(FONT, style, bytes)
                        .map_err(|_| format!("{path}: not a usable font"))
                });
            if let Err(e) = loaded {
                result = Err(e);
                return;
            }
        }
    });
    result
}

pub fn render(r: &Results, path: &Path) -> Result<(), String> {
    register_fonts()?;
    draw(r, path).map_err(|e| format!("drawing {}: {e}", path.display()))
}

fn draw(r: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(120);
    header.draw(&Text::new(
        "containerd-shim-rust-v2 vs containerd-shim-runc-v2 (+ runc) on containerd 1.6",
        (30, 14),
        (FONT, 28).into_font().style(FontStyle::Bold),
    ))?;
    let c = &r.config;
    header.draw(&Text::new(
        format!(
            "bars: medians (PSS: mean), whiskers: min–max; {} runs per runtime, {} throughput round(s), {} idle shims; {}",
            c.runs, c.rounds, c.idle, r.env.date_utc
        ),
        (30, 52),
        (FONT, 17).into_font().color(&RGBColor(80, 80, 80)),
    ))?;
    // Legend, one row: the two colours and the target line.
    let y = 84;
    for (x, name, color) in [
        (30, "rust: containerd-shim-rust-v2", RUST_COLOR),
        (380, "runc: containerd-shim-runc-v2 + runc", RUNC_COLOR),
    ] {
        header.draw(&Rectangle::new(
            [(x, y + 2), (x + 22, y + 20)],
            color.filled(),
        ))?;
        header.draw(&Text::new(name, (x + 30, y), (FONT, 18)))?;
    }
    for k in 0..2 {
        let x = 790 + 14 * k;
        header.draw(&PathElement::new(
            vec![(x, y + 11), (x + 8, y + 11)],
            BLACK.stroke_width(2),
        ))?;
    }
    header.draw(&Text::new(
        "target of #7 for rust: 0.5× runc's median, PSS 0.5 MiB",
        (820, y),
        (FONT, 18),
    ))?;

    let panels = body.split_evenly((1, 3));
    let lat = |p: &Option<crate::bench::PerRuntime<crate::bench::Latency>>| {
        p.as_ref()
            .map(|p| [Bar::of(p.rust.summary), Bar::of(p.runc.summary)])
            .unwrap_or([None, None])
    };
    panel(
        &panels[0],
        "Latency of one ctr call",
        "ms",
        &[
            Group {
                label: "start (ctr run --rm)".into(),
                bars: lat(&r.start),
                target: half_of_runc(&lat(&r.start)),
            },
            Group {
                label: "exec (ctr task exec)".into(),
                bars: lat(&r.exec),
                target: half_of_runc(&lat(&r.exec)),
            },
        ],
        1,
    )?;
    let tp = r
        .throughput
        .as_ref()
        .map(|p| [Bar::of(p.rust.summary), Bar::of(p.runc.summary)])
        .unwrap_or([None, None]);
    panel(
        &panels[1],
        &format!(
            "Throughput: {} containers, {} at a time",
            c.containers, c.concurrency
        ),
        "s",
        &[Group {
            label: "wall time of a round".into(),
            bars: tp,
            target: half_of_runc(&tp),
        }],
        2,
    )?;
    let (pss, rss) = match &r.idle {
        Some(p) => (
            [Bar::mean_of(p.rust.pss_mib), Bar::mean_of(p.runc.pss_mib)],
            [Bar::of(p.rust.rss_mib), Bar::of(p.runc.rss_mib)],
        ),
        None => ([None, None], [None, None]),
    };
    panel(
        &panels[2],
        &format!("Idle shim memory ({} shims per runtime)", c.idle),
        "MiB",
        &[
            Group {
                label: "PSS per shim (mean)".into(),
                bars: pss,
                target: Some(crate::report::PSS_TARGET_MIB),
            },
            Group {
                label: "RSS per shim (median)".into(),
                bars: rss,
                target: None,
            },
        ],
        2,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    unit: &str,
    groups: &[Group],
    digits: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let top = groups
        .iter()
        .flat_map(|g| {
            g.bars
                .iter()
                .flatten()
                .map(|b| b.hi.max(b.mid))
                .chain(g.target)
        })
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.18 } else { 1.0 };
    let n = groups.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 21).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    let half = 0.17;
    for (g, group) in groups.iter().enumerate() {
        for (k, (bar, color)) in group.bars.iter().zip([RUST_COLOR, RUNC_COLOR]).enumerate() {
            let Some(bar) = bar else { continue };
            let center = g as f64 + if k == 0 { -0.2 } else { 0.2 };
            chart.draw_series(std::iter::once(Rectangle::new(
                [(center - half, 0.0), (center + half, bar.mid)],
                color.filled(),
            )))?;
            let whisker = BLACK.stroke_width(2);
            chart.draw_series([
                PathElement::new(vec![(center, bar.lo), (center, bar.hi)], whisker),
                PathElement::new(
                    vec![(center - 0.05, bar.lo), (center + 0.05, bar.lo)],
                    whisker,
                ),
                PathElement::new(
                    vec![(center - 0.05, bar.hi), (center + 0.05, bar.hi)],
                    whisker,
                ),
            ])?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{:.d$}", bar.mid, d = digits),
                (center, bar.hi.max(bar.mid)),
                TextStyle::from((FONT, 17).into_font().style(FontStyle::Bold))
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))?;
        }
        if let Some(target) = group.target {
            let (a, b) = (g as f64 - 0.2 - half - 0.04, g as f64 - 0.2 + half + 0.04);
            chart.draw_series(DashedLineSeries::new(
                vec![(a, target), (b, target)],
                8,
                5,
                BLACK.stroke_width(2),
            ))?;
        }
        // The group's name under the axis, in the panel's pixels.
        let (px, py) = chart.backend_coord(&(g as f64, 0.0));
        let (bx, by) = area.get_base_pixel();
        area.draw(&Text::new(
            group.label.clone(),
            (px - bx, py - by + 10),
            TextStyle::from((FONT, 17).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    Ok(())
}
