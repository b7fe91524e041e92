//! The report's SVG plots.

use super::*;

pub(crate) type PlotFn = fn(&Path, &Results, f64, f64) -> Result<(), Box<dyn std::error::Error>>;

pub(crate) const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Bars: % of the floor (rate) and % of the floor per CPU-second, per drop workload.
pub(crate) fn plot_floor(path: &Path, r: &Results, floor: f64, floor_cpu: f64) -> PlotResult {
    let drops: Vec<&DropRow> = r.fleets.iter().flat_map(|f| &f.drops).collect();
    let bars: Vec<(String, f64, f64)> = drops
        .iter()
        .map(|d| {
            (d.short_label(), 100.0 * d.per_sec() / floor, 100.0 * d.per_cpu_second() / floor_cpu)
        })
        .collect();
    let (lo, hi) = floor_range(r, floor_cpu);
    let top = bars.iter().map(|b| b.1.max(b.2)).fold(hi.max(100.0), f64::max) * 1.3;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Drop throughput, % of the recvmmsg floor (same run)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..bars.len() as f64 - 0.5, 0f64..top)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("% of floor")
        .draw()?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x - 0.38, 0.0), (x - 0.02, b.1)], COLORS[0].filled())
        }))?
        .label("datagrams/s vs the floor's")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], COLORS[0].filled()));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x + 0.02, 0.0), (x + 0.38, b.2)], COLORS[1].filled())
        }))?
        .label("datagrams per CPU-second vs the floor's")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], COLORS[1].filled()));
    let right = bars.len() as f64 - 0.5;
    chart
        .draw_series(LineSeries::new([(-0.5, 100.0), (right, 100.0)], BLACK.stroke_width(1)))?
        .label("the floor (median of its runs)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(1)));
    let grey = RGBColor(140, 140, 140);
    for (i, y) in [lo, hi].into_iter().enumerate() {
        let series =
            chart.draw_series(DashedLineSeries::new([(-0.5, y), (right, y)], 6, 4, grey.into()))?;
        if i == 0 {
            series
                .label("lowest and highest floor run, per CPU-second")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], grey));
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

pub(crate) type PlotResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

pub(crate) fn fleet_axis(r: &Results) -> std::ops::Range<f64> {
    let lo = r.fleets.iter().map(|f| f.fleet).min().unwrap_or(1_000) as f64;
    let hi = r.fleets.iter().map(|f| f.fleet).max().unwrap_or(1_000_000) as f64;
    lo / 2.0..hi * 2.0
}

/// No-eligible datagrams/s processed vs fleet size, with the sender's rate and the floor.
pub(crate) fn plot_throughput(path: &Path, r: &Results, floor: f64, _: f64) -> PlotResult {
    let points: Vec<(f64, f64, f64)> = r
        .fleets
        .iter()
        .flat_map(|f| f.drops.iter().filter(|d| d.kind == Kind::NoEligible))
        .map(|d| (d.fleet as f64, d.per_sec(), d.blast.per_sec()))
        .collect();
    let top = points.iter().map(|p| p.1.max(p.2)).fold(floor, f64::max) * 1.2;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let xr = fleet_axis(r);
    let mut chart = ChartBuilder::on(&root)
        .caption("Drop throughput vs fleet size (owned=FALSE, 0 eligible)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(xr.clone().log_scale(), 0f64..top)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("devices in the fleet (N)")
        .y_desc("datagrams/s")
        .x_label_formatter(&|v| short(*v as usize))
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    chart
        .draw_series(
            LineSeries::new(points.iter().map(|p| (p.0, p.1)), COLORS[0].stroke_width(2))
                .point_size(4),
        )?
        .label("processed by the gate")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], COLORS[0].stroke_width(2)));
    chart
        .draw_series(
            LineSeries::new(points.iter().map(|p| (p.0, p.2)), COLORS[1].stroke_width(1))
                .point_size(3),
        )?
        .label("sent")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], COLORS[1].stroke_width(1)));
    chart
        .draw_series(LineSeries::new([(xr.start, floor), (xr.end, floor)], BLACK.stroke_width(1)))?
        .label("recvmmsg floor (mean)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.stroke_width(1)));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Median time to the last answer vs E, one line per N (log-log).
pub(crate) fn plot_last_answer(path: &Path, r: &Results, _: f64, _: f64) -> PlotResult {
    let all: Vec<f64> =
        r.fleets.iter().flat_map(|f| &f.discoveries).map(|d| d.last_ms().max(0.01)).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let hi = all.iter().copied().fold(1.0, f64::max) * 2.0;
    let emax = r.fleets.iter().flat_map(|f| &f.discoveries).map(|d| d.eligible).max().unwrap_or(1);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Time to the last answer vs eligible devices (leisure 0)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.5f64..emax as f64 * 2.0).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("eligible devices (E)")
        .y_desc("ms (median)")
        .x_label_formatter(&|v| short(*v as usize))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    for (i, f) in r.fleets.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                LineSeries::new(
                    f.discoveries.iter().map(|d| (d.eligible as f64, d.last_ms().max(0.01))),
                    c.stroke_width(2),
                )
                .point_size(4),
            )?
            .label(format!("N = {}", short(f.fleet)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// Answers/s (E / time to last answer) vs fleet size, one line per E.
pub(crate) fn plot_answers(path: &Path, r: &Results, _: f64, _: f64) -> PlotResult {
    let mut es: Vec<usize> =
        r.fleets.iter().flat_map(|f| &f.discoveries).map(|d| d.eligible).collect();
    es.sort_unstable();
    es.dedup();
    let top = r
        .fleets
        .iter()
        .flat_map(|f| &f.discoveries)
        .map(Discovery::answers_per_sec)
        .fold(1.0, f64::max)
        * 2.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Answers per second of one discovery vs fleet size", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(fleet_axis(r).log_scale(), (1f64..top).log_scale())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("devices in the fleet (N)")
        .y_desc("answers/s (median)")
        .x_label_formatter(&|v| short(*v as usize))
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    for (i, &e) in es.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = r
            .fleets
            .iter()
            .filter_map(|f| {
                let d = f.discoveries.iter().find(|d| d.eligible == e)?;
                Some((f.fleet as f64, d.answers_per_sec().max(1.0)))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)).point_size(4))?
            .label(format!("E = {}", thousands(e as f64)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// The API's update-to-visible percentiles, one line per update run (log y).
pub(crate) fn plot_updates(path: &Path, r: &Results, _: f64, _: f64) -> PlotResult {
    let keys = ["p50", "p90", "p99", "p999", "max"];
    let values: Vec<Vec<f64>> = r
        .updates
        .iter()
        .map(|u| keys.iter().map(|k| counter(&u.visible, &[k]).max(1) as f64).collect())
        .collect();
    let hi = values.iter().flatten().copied().fold(10.0, f64::max) * 3.0;
    let lo = values.iter().flatten().copied().fold(f64::INFINITY, f64::min).min(10.0) / 2.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Control updates: update-to-visible percentiles (API)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..keys.len() as f64 - 0.7, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(keys.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                keys.get(i as usize).map_or(String::new(), |k| (*k).to_owned())
            } else {
                String::new()
            }
        })
        .light_line_style(TRANSPARENT)
        .y_desc("µs")
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    for (i, (u, v)) in r.updates.iter().zip(&values).enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                LineSeries::new(
                    v.iter().enumerate().map(|(j, &y)| (j as f64, y)),
                    c.stroke_width(2),
                )
                .point_size(4),
            )?
            .label(u.label())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}
