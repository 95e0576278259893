//! `results.png`: medians as grouped bars (rust, runc and, where measured,
//! the null shim) with min–max whiskers, in four panels: `ctr` latency,
//! the CRI pod lifecycle (from `cri.json`, when the directory has one),
//! throughput and memory.
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
use crate::cri::CriResults;
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
const NULL_COLOR: RGBColor = RGBColor(160, 160, 160);
const COLORS: [RGBColor; 3] = [RUST_COLOR, RUNC_COLOR, NULL_COLOR];
const SIZE: (u32, u32) = (1900, 650);

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

    /// One figure, no range.
    fn single(v: Option<f64>) -> Option<Bar> {
        v.map(|v| Bar { mid: v, lo: v, hi: v })
    }
}

/// A group of bars, rust, runc and (where measured) the null shim, and the
/// value the goals ask the rust bar to stay under, drawn as a dashed line
/// across it.
struct Group {
    label: String,
    bars: Vec<Option<Bar>>,
    target: Option<f64>,
}

/// The stricter of the goals for a time: at most `ratio` of runc's median
/// (#7: 0.5 for start, exec and throughput; #19: 0.6 for the CRI
/// lifecycle), and an overhead above the null shim of at most a third of
/// runc's (#19).
fn time_goal(bars: &[Option<Bar>], ratio: Option<f64>) -> Option<f64> {
    let runc = bars.get(1).copied().flatten()?.mid;
    let of_runc = ratio.map(|r| runc * r);
    let overhead = bars.get(2).copied().flatten().map(|null| null.mid + (runc - null.mid) * crate::cri::OVERHEAD_GOAL);
    match (of_runc, overhead) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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

/// Draws `results.png` from the `ctr` run and, when there is one, the CRI
/// run.
pub fn render(r: &Results, cri: Option<&CriResults>, path: &Path) -> Result<(), String> {
    register_fonts()?;
    draw(r, cri, path).map_err(|e| format!("drawing {}: {e}", path.display()))
}

fn draw(r: &Results, cri: Option<&CriResults>, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(120);
    header.draw(&Text::new(
        "containerd-shim-rust-v2, containerd-shim-runc-v2 (+ runc) and the null shim on containerd 1.6",
        (30, 14),
        (FONT, 28).into_font().style(FontStyle::Bold),
    ))?;
    let c = &r.config;
    let cri_note = cri.map(|k| format!("; CRI: {} pods per handler, {} at once for memory", k.pods, k.density_pods)).unwrap_or_default();
    header.draw(&Text::new(
        format!(
            "bars: medians (PSS: mean), whiskers: min–max; ctr: {} runs per runtime, {} throughput round(s), {} idle shims ({}){cri_note}",
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
        (780, "null: containerd-shim-null-v2 (the floor)", NULL_COLOR),
    ] {
        header.draw(&Rectangle::new(
            [(x, y + 2), (x + 22, y + 20)],
            color.filled(),
        ))?;
        header.draw(&Text::new(name, (x + 30, y), (FONT, 18)))?;
    }
    for k in 0..2 {
        let x = 1240 + 14 * k;
        header.draw(&PathElement::new(
            vec![(x, y + 11), (x + 8, y + 11)],
            BLACK.stroke_width(2),
        ))?;
    }
    header.draw(&Text::new(
        "goal for rust: the stricter of #7 and #19 (overhead ≤ 1/3 of runc's)",
        (1270, y),
        (FONT, 18),
    ))?;

    let panels = body.split_evenly((1, 4));
    // The null shim's bar only where it was measured.
    let lat = |p: &Option<crate::bench::PerRuntime<crate::bench::Latency>>| -> Vec<Option<Bar>> {
        let Some(p) = p else { return vec![None, None] };
        let mut bars = vec![Bar::of(p.rust.summary), Bar::of(p.runc.summary)];
        if p.null.summary.is_some() {
            bars.push(Bar::of(p.null.summary));
        }
        bars
    };
    let (start, exec) = (lat(&r.start), lat(&r.exec));
    panel(
        &panels[0],
        "Latency of one ctr call",
        "ms",
        &[
            Group {
                label: "start (ctr run --rm)".into(),
                target: time_goal(&start, Some(crate::report::RATIO_TARGET)),
                bars: start,
            },
            Group {
                label: "exec (ctr task exec)".into(),
                target: time_goal(&exec, Some(crate::report::RATIO_TARGET)),
                bars: exec,
            },
        ],
        1,
    )?;
    let steps = |step: usize| -> Vec<Option<Bar>> {
        crate::cri::HANDLERS.iter().map(|h| Bar::of(cri.and_then(|k| k.summary(h, step)))).collect()
    };
    let cri_groups = [(4, "lifecycle", Some(crate::cri::LIFECYCLE_RATIO_GOAL)), (1, "Create+Start", None), (2, "ExecSync", None)].map(|(step, label, ratio)| {
        let bars = steps(step);
        Group { label: label.into(), target: time_goal(&bars, ratio), bars }
    });
    panel(&panels[1], "CRI, per pod (project's client)", "ms", &cri_groups, 1)?;
    let tp = r
        .throughput
        .as_ref()
        .map(|p| vec![Bar::of(p.rust.summary), Bar::of(p.runc.summary)])
        .unwrap_or_default();
    panel(
        &panels[2],
        &format!(
            "Throughput: {} containers, {} at a time",
            c.containers, c.concurrency
        ),
        "s",
        &[Group {
            label: "wall time of a round".into(),
            target: time_goal(&tp, Some(crate::report::RATIO_TARGET)),
            bars: tp,
        }],
        2,
    )?;
    // RSS is in the table; the goals are on PSS.
    let pss = match &r.idle {
        Some(p) => vec![Bar::mean_of(p.rust.pss_mib), Bar::mean_of(p.runc.pss_mib)],
        None => vec![None, None],
    };
    let per_pod = ["rust", "runc"].map(|h| Bar::single(cri.and_then(|k| k.density_of(h)).map(|d| d.shim_pss_kib / 1024.0))).to_vec();
    panel(
        &panels[3],
        "Shim memory: PSS per shim",
        "MiB",
        &[
            Group {
                label: format!("{} idle ctr shims", c.idle),
                bars: pss,
                target: Some(crate::report::PSS_TARGET_MIB),
            },
            Group {
                label: format!("{} CRI pods", cri.map_or(0, |k| k.density_pods)),
                bars: per_pod,
                target: Some(crate::cri::POD_PSS_GOAL_MIB),
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

    for (g, group) in groups.iter().enumerate() {
        // Two bars at ±0.2, three at -0.27, 0 and 0.27.
        let n = group.bars.len().max(2);
        let spacing = 0.8 / n as f64;
        let half = spacing * 0.42;
        let center_of = |k: usize| g as f64 + (k as f64 - (n - 1) as f64 / 2.0) * spacing;
        let label_size = if n > 2 { 14 } else { 17 };
        for (k, (bar, color)) in group.bars.iter().zip(COLORS).enumerate() {
            let Some(bar) = bar else { continue };
            let center = center_of(k);
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
                TextStyle::from((FONT, label_size).into_font().style(FontStyle::Bold))
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))?;
        }
        if let Some(target) = group.target {
            let (a, b) = (center_of(0) - half - 0.04, center_of(0) + half + 0.04);
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
