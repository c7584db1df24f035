//! SVG charts: the latency distribution of each core, per-core rate and percentile bars, and a
//! generic line chart (bench-lab's throughput against rule count for each system).
//!
//! Charts are drawn with plotters' SVG backend and no font library: text is written as SVG
//! `<text>` elements (`font-family="sans-serif"`) that the viewer lays out, so nothing depends
//! on the fonts of the machine that draws them. Each chart comes as a string (`*_svg`) or
//! written to a file.
//!
//! Log-scaled axes are drawn by plotting `log10` of the values on a linear axis with ticks at
//! decades (and 2× and 5× within short ranges), so every axis has ticks chosen here and
//! labelled in plain numbers (`0.5`, `20k`, `1.5M`).

use std::path::{Path, PathBuf};

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::format::tick;
use crate::stats::CoreStats;

/// A chart that cannot be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// There is nothing to draw (no series, no points, or only empty histograms).
    #[error("nothing to plot: {0}")]
    NoData(&'static str),
    /// A value cannot be placed on the chart (NaN or infinite, or not positive on a log axis).
    #[error("series {series:?} has a point ({x}, {y}) that cannot be plotted on these axes")]
    BadPoint {
        /// The series holding the point.
        series: String,
        /// Its x value.
        x: f64,
        /// Its y value.
        y: f64,
    },
    /// The drawing library failed.
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    /// The SVG file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// How an axis maps values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    /// Logarithmic when every value is positive and they span at least two decades; else linear.
    #[default]
    Auto,
    /// Linear, from 0 when every value is non-negative.
    Linear,
    /// Base-10 logarithmic; every value must be positive.
    Log,
}

/// A line chart of named series of `(x, y)` points, each drawn as a line with point markers.
#[derive(Clone, Debug)]
pub struct LineChart {
    /// Caption above the chart.
    pub title: String,
    /// Description under the x axis.
    pub x_label: String,
    /// Description beside the y axis.
    pub y_label: String,
    /// Scale of the x axis.
    pub x_scale: Scale,
    /// Scale of the y axis.
    pub y_scale: Scale,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

/// Default chart size in pixels.
pub const DEFAULT_SIZE: (u32, u32) = (900, 560);

/// Tableau 10: distinct, colour-blind-friendly series colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
const FONT: &str = "sans-serif";

impl LineChart {
    /// A chart with automatic scales and the default size.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Auto,
            y_scale: Scale::Auto,
            size: DEFAULT_SIZE,
        }
    }

    /// Set the x axis scale.
    pub fn x_scale(mut self, scale: Scale) -> Self {
        self.x_scale = scale;
        self
    }

    /// Set the y axis scale.
    pub fn y_scale(mut self, scale: Scale) -> Self {
        self.y_scale = scale;
        self
    }

    /// Set the size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Draw `series` (name, points) as an SVG document. Points of a series are joined in the
    /// order given (sort them by x for a line over x).
    pub fn to_svg(&self, series: &[(String, Vec<(f64, f64)>)]) -> Result<String, PlotError> {
        if series.iter().all(|(_, pts)| pts.is_empty()) {
            return Err(PlotError::NoData("no series has a point"));
        }
        let xs = series.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
        let ys = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
        let x_axis = Axis::fit(xs, self.x_scale);
        let y_axis = Axis::fit(ys, self.y_scale);
        for (name, pts) in series {
            if let Some(&(x, y)) = pts
                .iter()
                .find(|&&(x, y)| !x_axis.accepts(x) || !y_axis.accepts(y))
            {
                return Err(PlotError::BadPoint {
                    series: name.clone(),
                    x,
                    y,
                });
            }
        }
        svg_string(self.size, |root| {
            let root = root.titled(&self.title, (FONT, 22)).map_err(draw_err)?;
            let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
            let (plot_area, legend_area) = split_legend(&root, &names);
            let mut chart = cartesian(&plot_area, &x_axis, &y_axis)?;
            mesh(&mut chart, &x_axis, &y_axis, &self.x_label, &self.y_label)?;
            for (i, (_, pts)) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let mapped: Vec<(f64, f64)> = pts
                    .iter()
                    .map(|&(x, y)| (x_axis.map(x), y_axis.map(y)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(
                        mapped.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(draw_err)?;
                chart
                    .draw_series(mapped.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(draw_err)?;
            }
            side_legend(&legend_area, &names, Mark::Line)
        })
    }

    /// Draw `series` and write the SVG document to `path`.
    pub fn write(
        &self,
        path: impl AsRef<Path>,
        series: &[(String, Vec<(f64, f64)>)],
    ) -> Result<(), PlotError> {
        write_file(path.as_ref(), &self.to_svg(series)?)
    }
}

/// Write a line chart with automatic scales to `path` (see [`LineChart`] for more control):
/// for bench-lab, throughput (y) against number of rules (x), one series per system.
pub fn line_chart(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), PlotError> {
    LineChart::new(title, x_label, y_label).write(path, series)
}

/// The latency distribution of each core's `latency` histogram as an SVG document: x is the
/// latency in µs (log scale), y the percentile on a "nines" scale (0, 90, 99, 99.9, …) so the
/// tail is as visible as the body. Cores with an empty histogram are left out.
pub fn latency_cdf_svg(title: &str, cores: &[CoreStats]) -> Result<String, PlotError> {
    let non_empty: Vec<&CoreStats> = cores.iter().filter(|c| !c.latency.is_empty()).collect();
    if non_empty.is_empty() {
        return Err(PlotError::NoData("every core's latency histogram is empty"));
    }
    // Deep enough to show the last sample of the largest histogram, between 2 and 6 nines.
    let max_count = non_empty.iter().map(|c| c.latency.len()).max().unwrap_or(1);
    let top_nines = ((max_count as f64).log10().ceil()).clamp(2.0, 6.0);
    let nines = |q: f64| {
        if q >= 1.0 {
            top_nines
        } else {
            (-(1.0 - q).log10()).min(top_nines)
        }
    };
    let curves: Vec<(String, Vec<(f64, f64)>)> = non_empty
        .iter()
        .map(|c| {
            let total = c.latency.len() as f64;
            let mut cumulative = 0u64;
            let mut points = Vec::new();
            for (i, (value, count)) in c.latency.buckets().enumerate() {
                let us = (value as f64 / 1_000.0).max(0.001);
                if i == 0 {
                    points.push((us, 0.0));
                }
                cumulative += count;
                points.push((us, nines(cumulative as f64 / total)));
            }
            (core_label(c), points)
        })
        .collect();
    let x_axis = Axis::fit(
        curves.iter().flat_map(|c| c.1.iter().map(|p| p.0)),
        Scale::Log,
    );
    let y_axis = Axis {
        log: false,
        lo: 0.0,
        hi: top_nines,
        ticks: (0..=top_nines as u32).map(f64::from).collect(),
    };
    // Ticks sit at whole nines: 0 → "0", 1 → "90", 2 → "99", 3 → "99.9", …
    let percentile_label = |v: &f64| match v.round() as usize {
        0 => "0".to_owned(),
        1 => "90".to_owned(),
        n => format!(
            "99{}{}",
            if n > 2 { "." } else { "" },
            "9".repeat(n.saturating_sub(2))
        ),
    };
    svg_string(DEFAULT_SIZE, |root| {
        let root = root.titled(title, (FONT, 22)).map_err(draw_err)?;
        let names: Vec<&str> = curves.iter().map(|c| c.0.as_str()).collect();
        let (plot_area, legend_area) = split_legend(&root, &names);
        let mut chart = cartesian(&plot_area, &x_axis, &y_axis)?;
        let x_fmt = |v: &f64| x_axis.label(*v);
        chart
            .configure_mesh()
            .x_desc("latency (µs)")
            .y_desc("percentile")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&percentile_label)
            .bold_line_style(GRID)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(draw_err)?;
        for (i, (_, pts)) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|&(x, y)| (x_axis.map(x), y)),
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?;
        }
        side_legend(&legend_area, &names, Mark::Line)
    })
}

/// Write [`latency_cdf_svg`] to `path`.
pub fn latency_cdf(
    path: impl AsRef<Path>,
    title: &str,
    cores: &[CoreStats],
) -> Result<(), PlotError> {
    write_file(path.as_ref(), &latency_cdf_svg(title, cores)?)
}

/// Per-core bars as an SVG document: packet rate (Mpps) on the left, p50 / p99 / p99.9
/// processing time (µs, log scale) on the right.
pub fn core_bars_svg(title: &str, cores: &[CoreStats]) -> Result<String, PlotError> {
    if cores.is_empty() {
        return Err(PlotError::NoData("no cores"));
    }
    let n = cores.len();
    let mpps: Vec<f64> = cores.iter().map(|c| c.pps() / 1e6).collect();
    const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];
    let lat: Vec<[Option<f64>; 3]> = cores
        .iter()
        .map(|c| {
            QUANTILES.map(|(q, _)| {
                (!c.latency.is_empty())
                    .then(|| (c.latency.value_at_quantile(q) as f64 / 1_000.0).max(0.001))
            })
        })
        .collect();
    let categories = Axis {
        log: false,
        lo: -0.5,
        hi: n as f64 - 0.5,
        ticks: (0..n).map(|i| i as f64).collect(),
    };
    let labels: Vec<String> = cores.iter().map(core_label).collect();
    let category_label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let rate_axis = Axis::fit(mpps.iter().copied(), Scale::Linear);
    let lat_values: Vec<f64> = lat.iter().flatten().flatten().copied().collect();
    let lat_axis = Axis::fit(
        if lat_values.is_empty() {
            vec![1.0]
        } else {
            lat_values
        },
        Scale::Log,
    );
    let (width, height) = (DEFAULT_SIZE.0 + 340, DEFAULT_SIZE.1);
    svg_string((width, height), |root| {
        let root = root.titled(title, (FONT, 22)).map_err(draw_err)?;
        let names: Vec<&str> = QUANTILES.iter().map(|q| q.1).collect();
        let (plots, legend_area) = split_legend(&root, &names);
        let half = plots.dim_in_pixel().0 / 2;
        let (left, right) = plots.split_horizontally(half);

        let mut chart = cartesian(&left, &categories, &rate_axis)?;
        let y_fmt = |v: &f64| rate_axis.label(*v);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("core")
            .y_desc("packet rate (Mpps)")
            .x_label_formatter(&category_label)
            .y_label_formatter(&y_fmt)
            .bold_line_style(GRID)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(draw_err)?;
        let color = PALETTE[0];
        chart
            .draw_series(mpps.iter().enumerate().map(|(i, &v)| {
                let x = i as f64;
                Rectangle::new([(x - 0.3, rate_axis.lo), (x + 0.3, v)], color.filled())
            }))
            .map_err(draw_err)?;

        let mut chart = cartesian(&right, &categories, &lat_axis)?;
        let y_fmt = |v: &f64| lat_axis.label(*v);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("core")
            .y_desc("processing time (µs)")
            .x_label_formatter(&category_label)
            .y_label_formatter(&y_fmt)
            .bold_line_style(GRID)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(draw_err)?;
        for k in 0..QUANTILES.len() {
            let color = PALETTE[k + 1];
            let offset = (k as f64 - 1.0) * 0.27;
            chart
                .draw_series(lat.iter().enumerate().filter_map(|(i, values)| {
                    let x = i as f64 + offset;
                    values[k].map(|v| {
                        Rectangle::new(
                            [(x - 0.12, lat_axis.lo), (x + 0.12, lat_axis.map(v))],
                            color.filled(),
                        )
                    })
                }))
                .map_err(draw_err)?;
        }
        side_legend(&legend_area, &names, Mark::Block { first_color: 1 })
    })
}

/// Write [`core_bars_svg`] to `path`.
pub fn core_bars(
    path: impl AsRef<Path>,
    title: &str,
    cores: &[CoreStats],
) -> Result<(), PlotError> {
    write_file(path.as_ref(), &core_bars_svg(title, cores)?)
}

fn core_label(c: &CoreStats) -> String {
    if c.name.is_empty() {
        format!("core {}", c.core)
    } else {
        format!("{} ({})", c.name, c.core)
    }
}

/// One axis in plot space: values are `log10`-mapped when `log`. Its ticks are exactly `ticks`.
#[derive(Clone)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// An axis covering `values` with round ticks.
    fn fit(values: impl IntoIterator<Item = f64>, scale: Scale) -> Axis {
        let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (min, max) = if finite.is_empty() {
            (0.0, 1.0)
        } else {
            (min, max)
        };
        let log = match scale {
            Scale::Log => true,
            Scale::Linear => false,
            Scale::Auto => min > 0.0 && max / min >= 100.0,
        };
        if log {
            Self::log_axis(min.max(f64::MIN_POSITIVE), max.max(f64::MIN_POSITIVE))
        } else {
            Self::linear_axis(min, max)
        }
    }

    fn log_axis(min: f64, max: f64) -> Axis {
        let lo = min.log10().floor();
        let mut hi = max.log10().ceil();
        if hi <= lo {
            hi = lo + 1.0;
        }
        let decades = hi - lo;
        let mut ticks = Vec::new();
        let mut d = lo;
        while d <= hi + 1e-9 {
            ticks.push(d);
            if decades <= 2.0 && d < hi {
                ticks.push(d + 2f64.log10());
                ticks.push(d + 5f64.log10());
            }
            d += 1.0;
        }
        Axis {
            log: true,
            lo,
            hi,
            ticks,
        }
    }

    fn linear_axis(min: f64, max: f64) -> Axis {
        let min = if min >= 0.0 { 0.0 } else { min };
        let max = if max <= 0.0 { 0.0 } else { max };
        let span = if max > min { max - min } else { 1.0 };
        let raw = span / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * magnitude);
        let lo = (min / step).floor() * step;
        let mut hi = (max / step).ceil() * step;
        if hi <= lo {
            hi = lo + step;
        }
        let count = ((hi - lo) / step).round() as usize;
        let ticks = (0..=count).map(|i| lo + i as f64 * step).collect();
        Axis {
            log: false,
            lo,
            hi,
            ticks,
        }
    }

    fn accepts(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }

    /// A value in plot space.
    fn map(&self, v: f64) -> f64 {
        if self.log { v.log10() } else { v }
    }

    /// The tick label of a plot-space position.
    fn label(&self, p: f64) -> String {
        let v = if self.log { 10f64.powf(p) } else { p };
        // Snap float noise (1.9999999) before formatting.
        let rounded = {
            let scale = 10f64.powf(3.0 - v.abs().max(1e-12).log10().floor());
            (v * scale).round() / scale
        };
        tick(rounded)
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (v - self.lo) / (self.hi - self.lo);
        let pixels = f64::from(limit.1 - limit.0) * fraction;
        limit.0 + pixels.round().clamp(-1e6, 1e6) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points (grid lines and labels) only: no light grid between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Axis, Axis>>;

fn cartesian<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    x: &Axis,
    y: &Axis,
) -> Result<Chart<'a, 'b>, PlotError> {
    ChartBuilder::on(area)
        .margin(16)
        .margin_right(24)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x.clone(), y.clone())
        .map_err(draw_err)
}

fn mesh(
    chart: &mut Chart<'_, '_>,
    x: &Axis,
    y: &Axis,
    x_desc: &str,
    y_desc: &str,
) -> Result<(), PlotError> {
    let x_fmt = |v: &f64| x.label(*v);
    let y_fmt = |v: &f64| y.label(*v);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .bold_line_style(GRID)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(draw_err)
}

/// How a legend entry is marked.
#[derive(Clone, Copy)]
enum Mark {
    /// A short line in the series colour (`PALETTE[i]`).
    Line,
    /// A filled block in `PALETTE[first_color + i]`.
    Block { first_color: usize },
}

type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;

/// Split off a column on the right wide enough for a legend of `names`.
fn split_legend<'b>(area: &Area<'b>, names: &[&str]) -> (Area<'b>, Area<'b>) {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as u32;
    // About 7 px per character at 14 px, plus the mark and padding.
    let width = (longest * 7 + 50).clamp(80, 300);
    let total = area.dim_in_pixel().0;
    area.split_horizontally(total.saturating_sub(width))
}

/// A legend drawn beside the plot, so it never covers data.
fn side_legend(area: &Area<'_>, names: &[&str], mark: Mark) -> Result<(), PlotError> {
    let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, name) in names.iter().enumerate() {
        let y = 30 + 24 * i as i32;
        match mark {
            Mark::Line => {
                let color = PALETTE[i % PALETTE.len()];
                area.draw(&PathElement::new(
                    vec![(4, y), (28, y)],
                    color.stroke_width(2),
                ))
            }
            Mark::Block { first_color } => {
                let color = PALETTE[(first_color + i) % PALETTE.len()];
                area.draw(&Rectangle::new([(8, y - 6), (24, y + 6)], color.filled()))
            }
        }
        .map_err(draw_err)?;
        area.draw(&Text::new(name.to_string(), (36, y), style.clone()))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Run `draw` on a white SVG canvas of `size` and return the document.
fn svg_string(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

fn write_file(path: &Path, svg: &str) -> Result<(), PlotError> {
    std::fs::write(path, svg).map_err(|source| PlotError::Write {
        path: path.to_owned(),
        source,
    })
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_ticks_are_decades() {
        let a = Axis::fit([3.0, 40_000.0], Scale::Auto);
        assert!(a.log);
        assert_eq!((a.lo, a.hi), (0.0, 5.0));
        assert_eq!(a.ticks, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let labels: Vec<_> = a.ticks.iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels, ["1", "10", "100", "1000", "10k", "100k"]);
        // A short range gets 2× and 5× ticks too.
        let b = Axis::fit([0.2, 3.0], Scale::Log);
        let labels: Vec<_> = b.ticks.iter().map(|&t| b.label(t)).collect();
        assert_eq!(labels, ["0.1", "0.2", "0.5", "1", "2", "5", "10"]);
    }

    #[test]
    fn linear_axis_is_round_and_starts_at_zero() {
        let a = Axis::fit([120_000.0, 732_000.0], Scale::Auto);
        assert!(!a.log);
        assert_eq!(a.lo, 0.0);
        assert!(a.hi >= 732_000.0 && a.hi <= 1_000_000.0);
        let labels: Vec<_> = a.ticks.iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels, ["0", "200k", "400k", "600k", "800k"]);
        let flat = Axis::fit([5.0, 5.0], Scale::Linear);
        assert!(flat.hi > flat.lo);
        let empty = Axis::fit([], Scale::Auto);
        assert!(empty.hi > empty.lo);
    }

    #[test]
    fn bad_points_and_empty_input_are_errors() {
        let chart = LineChart::new("t", "x", "y").x_scale(Scale::Log);
        let err = chart.to_svg(&[("s".into(), vec![(0.0, 1.0)])]).unwrap_err();
        assert!(matches!(err, PlotError::BadPoint { .. }), "{err}");
        let err = chart
            .to_svg(&[("s".into(), vec![(1.0, f64::NAN)])])
            .unwrap_err();
        assert!(matches!(err, PlotError::BadPoint { .. }), "{err}");
        assert!(matches!(chart.to_svg(&[]), Err(PlotError::NoData(_))));
        assert!(matches!(
            latency_cdf_svg("t", &[CoreStats::new(0, "idle")]),
            Err(PlotError::NoData(_))
        ));
        assert!(matches!(core_bars_svg("t", &[]), Err(PlotError::NoData(_))));
    }
}
