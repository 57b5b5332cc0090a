//! SVG plots of an experiment (plotters, no system fonts needed): quality against unlearning time,
//! forgetting per method, and the stream's quality and forgetting per request.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::results::{StreamRow, Summary};
use unlearnrec_core::error::{Error, Result};
use unlearnrec_core::io::write_atomic;

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(path, std::io::Error::other(format!("drawing the plot: {e}")))
}

fn color(k: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[k % COLORS.len()]
}

/// The distinct values of `f` over `items`, in order of first appearance.
fn distinct<T, F: Fn(&T) -> String>(items: &[T], f: F) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in items {
        let v = f(x);
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Renders into a string and writes it atomically.
fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        draw(root.clone())?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    write_atomic(path, svg.as_bytes())
}

/// Test Recall@20 against unlearning time (log scale), one point per (dataset, model, protocol,
/// fraction) group and one colour per method (means over the seeds).
///
/// # Errors
/// [`Error::Io`] when drawing or writing fails.
pub fn quality_vs_time(path: &Path, summaries: &[Summary]) -> Result<()> {
    let pts: Vec<(&Summary, f64, f64)> = summaries
        .iter()
        .map(|s| (s, s.mean("unlearn_secs").max(1e-4), s.mean("recall@20")))
        .filter(|(_, x, y)| x.is_finite() && y.is_finite())
        .collect();
    let methods = distinct(summaries, |s| s.method.clone());
    let (mut lo, mut hi) = pts.iter().fold((f64::INFINITY, 0f64), |(l, h), p| (l.min(p.1), h.max(p.1)));
    if !lo.is_finite() {
        (lo, hi) = (1e-3, 1.0);
    }
    // Whole decades with some room on both sides of the points.
    let (lo_decade, hi_decade) = ((lo / 1.5).log10().floor(), (hi * 1.5).log10().ceil());
    let x_range = 10f64.powf(lo_decade)..10f64.powf(hi_decade.max(lo_decade + 1.0));
    let y_max = pts.iter().map(|p| p.2).fold(0f64, f64::max).max(1e-3) * 1.15;
    write_svg(path, (800, 520), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("Test Recall@20 vs unlearning time", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.log_scale(), 0f64..y_max)
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("unlearning time (s, log scale)")
            .y_desc("Recall@20")
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (k, m) in methods.iter().enumerate() {
            let c = color(k);
            chart
                .draw_series(pts.iter().filter(|p| &p.0.method == m).map(|p| Circle::new((p.1, p.2), 5, c.filled())))
                .map_err(|e| plot_error(path, e))?
                .label(m.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| plot_error(path, e))?;
        Ok(())
    })
}

fn bars(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    path: &Path,
    title: &str,
    values: &[(String, f64, usize)],
    reference: Option<f64>,
) -> Result<()> {
    let lo = values.iter().map(|v| v.1).chain(reference).filter(|v| v.is_finite()).fold(0f64, f64::min);
    let hi = values.iter().map(|v| v.1).chain(reference).filter(|v| v.is_finite()).fold(0f64, f64::max);
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let n = values.len().max(1) as i32;
    // A segmented `0..m` has the m + 1 segments 0..=m.
    let names: Vec<String> = values.iter().map(|v| v.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((0..n - 1).into_segmented(), (lo - if lo < 0.0 { pad } else { 0.0 })..(hi + pad))
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len().max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(|e| plot_error(path, e))?;
    chart
        .draw_series(values.iter().enumerate().filter(|(_, v)| v.1.is_finite()).map(|(k, v)| {
            let mut r = Rectangle::new(
                [(SegmentValue::Exact(k as i32), 0.0), (SegmentValue::Exact(k as i32 + 1), v.1)],
                color(v.2).filled(),
            );
            r.set_margin(0, 0, 12, 12);
            r
        }))
        .map_err(|e| plot_error(path, e))?;
    if let Some(r) = reference.filter(|r| r.is_finite()) {
        chart
            .draw_series(LineSeries::new(
                [(SegmentValue::Exact(0), r), (SegmentValue::Exact(n), r)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| plot_error(path, e))?;
    }
    Ok(())
}

/// Two bar charts per method, averaged over every row: the removed edges' mean score after unlearning
/// (with `original`, the score before, and a line at the non-edges' mean score) and MI-NG.
///
/// # Errors
/// [`Error::Io`] when drawing or writing fails.
pub fn forgetting(path: &Path, summaries: &[Summary]) -> Result<()> {
    let methods = distinct(summaries, |s| s.method.clone());
    let avg = |m: Option<&str>, metric: &str| {
        let v: Vec<f64> = summaries
            .iter()
            .filter(|s| m.is_none_or(|m| s.method == m))
            .map(|s| s.mean(metric))
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
    };
    let mut removed = vec![("original".to_string(), avg(None, "removed_before"), 7)];
    removed.extend(methods.iter().enumerate().map(|(k, m)| (m.clone(), avg(Some(m), "removed_after"), k)));
    let mi_ng: Vec<(String, f64, usize)> =
        methods.iter().enumerate().map(|(k, m)| (m.clone(), avg(Some(m), "mi_ng"), k)).collect();
    let non_edges = avg(None, "non_edges_after");
    write_svg(path, (1100, 480), |root| {
        let (left, right) = root.split_horizontally(600);
        bars(&left, path, "removed-edge mean score (line: non-edges)", &removed, Some(non_edges))?;
        bars(&right, path, "MI-NG (higher: more forgotten)", &mi_ng, None)
    })
}

/// The stream: one panel per figure (Recall@20, the removed edges' mean score, the strongest attacker's
/// member rate on them, top-20 agreement with the retrain on the union, and for `spam` the targets'
/// exposure) against the number of requests: UnlearnRec as lines, the exact retrain on the union so far
/// as triangles, the second-seed retrain as circles, one colour per (dataset, model, scenario, seed).
///
/// # Errors
/// [`Error::Io`] when drawing or writing fails.
pub fn stream(path: &Path, rows: &[StreamRow]) -> Result<()> {
    const AGREEMENT: &str = "top-20 agreement with the retrain on the union";
    let label = |r: &StreamRow| format!("{}/{}/{}/seed {}", r.dataset, r.model, r.scenario, r.seed);
    let streams = distinct(rows, label);
    let max_step = rows.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    type Figure = (&'static str, fn(&StreamRow) -> f64);
    let mut figures: Vec<Figure> = vec![
        ("Recall@20 (lines: UnlearnRec; ▲ retrain on the union; ○ second seed)", |r| r.recall),
        ("mean score of the removed edges", |r| r.removed_score),
        ("attacker: removed edges called members", |r| r.members),
        (AGREEMENT, |r| r.agreement_top20),
    ];
    if rows.iter().any(|r| r.exposure_share.is_finite()) {
        figures.push(("spam targets: real users exposed (top 20)", |r| r.exposure_share));
    }
    let cols = 2usize;
    let nrows = figures.len().div_ceil(cols);
    write_svg(path, (1100, 380 * nrows as u32), |root| {
        let areas = root.split_evenly((nrows, cols));
        let mut first = true;
        for (area, (title, value)) in areas.iter().zip(&figures) {
            // The retrain agrees with itself: its agreement points say nothing.
            let shown = |r: &StreamRow| !(*title == AGREEMENT && r.method == "retrain");
            let vals: Vec<f64> = rows.iter().filter(|r| shown(r)).map(value).filter(|v| v.is_finite()).collect();
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let (lo, hi) = if lo.is_finite() { (lo, hi.max(lo + 1e-3)) } else { (0.0, 1.0) };
            let pad = (hi - lo) * 0.1;
            let (lo, hi) = (lo - pad, hi + pad);
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(0f64..max_step, lo..hi)
                .map_err(|e| plot_error(path, e))?;
            chart.configure_mesh().x_desc("requests").draw().map_err(|e| plot_error(path, e))?;
            for (k, s) in streams.iter().enumerate() {
                let c = color(k);
                let mine = |r: &&StreamRow| &label(r) == s && value(r).is_finite() && shown(r);
                let line: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| mine(r) && (r.method == "unlearnrec" || r.method == "original"))
                    .map(|r| (r.step as f64, value(r)))
                    .collect();
                let series =
                    chart.draw_series(LineSeries::new(line, c.stroke_width(2))).map_err(|e| plot_error(path, e))?;
                // One legend entry per stream, in the first panel only; the markers are named in its caption.
                if first {
                    series
                        .label(s.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
                }
                chart
                    .draw_series(
                        rows.iter()
                            .filter(|r| mine(r) && r.method == "retrain")
                            .map(|r| TriangleMarker::new((r.step as f64, value(r)), 6, c.filled())),
                    )
                    .map_err(|e| plot_error(path, e))?;
                chart
                    .draw_series(
                        rows.iter()
                            .filter(|r| mine(r) && r.method == "retrain-seed2")
                            .map(|r| Circle::new((r.step as f64, value(r)), 4, c.stroke_width(2))),
                    )
                    .map_err(|e| plot_error(path, e))?;
            }
            if first {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::LowerLeft)
                    .label_font(("sans-serif", 11))
                    .draw()
                    .map_err(|e| plot_error(path, e))?;
            }
            first = false;
        }
        Ok(())
    })
}

/// A log-log plot of named series of (x, y) points (the cost curve of `unlearnrec bench --scale`): one colour
/// per series, each labelled with its fitted exponent when given.
pub fn log_log(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = || series.iter().flat_map(|(_, s)| s.iter()).filter(|p| p.0 > 0.0 && p.1 > 0.0);
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = pts().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo.is_finite() { (lo / 2.0, hi * 2.0) } else { (0.1, 10.0) }
    };
    let ((x0, x1), (y0, y1)) = (bounds(|p| p.0), bounds(|p| p.1));
    write_svg(path, (900, 620), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(|e| plot_error(path, e))?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| plot_error(path, e))?;
        for (k, (name, s)) in series.iter().enumerate() {
            let c = color(k);
            let line: Vec<(f64, f64)> = s.iter().copied().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
                .map_err(|e| plot_error(path, e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
            chart
                .draw_series(line.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(|e| plot_error(path, e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, e))?;
        Ok(())
    })
}
