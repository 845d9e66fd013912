//! The report's charts: bar charts drawn by plotters into inline SVG (text as SVG `<text>` in
//! the reader's own sans-serif font: nothing is loaded from elsewhere).

use plotters::prelude::*;

/// A bar chart of `values` over `labels`, `title` above it, `unit` along the y axis.
pub fn bars(title: &str, unit: &str, labels: &[String], values: &[u64]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 280)).into_drawing_area();
        let failed = |e: &dyn std::fmt::Display| format!("chart {title:?}: {e}");
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let n = values.len().max(1) as u32;
        let top = values.iter().copied().max().unwrap_or(0);
        let top = top + top / 10 + 1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((0..n).into_segmented(), 0u64..top)
            .map_err(|e| failed(&e))?;
        // About twelve labels whatever the number of days.
        let every = (labels.len() / 12).max(1);
        let label = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) if *i as usize % every == 0 => {
                labels.get(*i as usize).cloned().unwrap_or_default()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len().max(1))
            .x_label_formatter(&label)
            .y_desc(unit)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| failed(&e))?;
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(RGBColor(46, 100, 160).filled())
                    .margin(1)
                    .data(values.iter().enumerate().map(|(i, v)| (i as u32, *v))),
            )
            .map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}
