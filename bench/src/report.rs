//! The bench's output: rows of figures, rendered as a table for people and JSON for tools.

use serde::Serialize;

use crate::stats::Summary;

/// Which way a unit improves; ratios are always "our cost / the alternative's cost", so a ratio
/// above 1 means we are slower, heavier or use more.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

/// One measured figure, with the same job done another way when there is one.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    pub unit: &'static str,
    pub better: Better,
    pub ours: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternative: Option<Alternative>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Alternative {
    pub name: String,
    pub figure: Summary,
    /// Our cost over theirs (see [`Better`]).
    pub ratio: f64,
}

impl Row {
    pub fn alone(
        section: &'static str,
        figure: impl Into<String>,
        unit: &'static str,
        ours: Summary,
    ) -> Self {
        Self {
            section,
            figure: figure.into(),
            unit,
            better: Better::Lower,
            ours,
            alternative: None,
        }
    }

    /// A figure measured both ways; `better` says how to read the ratio.
    pub fn versus(
        section: &'static str,
        figure: impl Into<String>,
        unit: &'static str,
        better: Better,
        ours: Summary,
        name: impl Into<String>,
        theirs: Summary,
    ) -> Self {
        let ratio = match better {
            Better::Lower => ours.median / theirs.median,
            Better::Higher => theirs.median / ours.median,
        };
        Self {
            better,
            alternative: Some(Alternative {
                name: name.into(),
                figure: theirs,
                ratio,
            }),
            ..Self::alone(section, figure, unit, ours)
        }
    }
}

/// The comparison where we fare worst: the highest ratio.
pub fn slowest(rows: &[Row]) -> Option<&Row> {
    rows.iter()
        .filter(|r| r.alternative.as_ref().is_some_and(|a| a.ratio.is_finite()))
        .max_by(|a, b| ratio(a).total_cmp(&ratio(b)))
}

fn ratio(row: &Row) -> f64 {
    row.alternative.as_ref().map_or(f64::NAN, |a| a.ratio)
}

/// `median [min–max]` (just the value when there is one) with the decimals its magnitude needs.
pub fn cell(s: &Summary) -> String {
    if s.samples.len() == 1 {
        return num(s.median);
    }
    format!("{} [{}–{}]", num(s.median), num(s.min), num(s.max))
}

fn num(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        _ => format!("{x:.2}"),
    }
}

/// A fixed-width table: section, figure, unit, ours, the alternative and its figure, ratio.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "section",
        "figure",
        "unit",
        "ours: median [min–max]",
        "alternative",
        "theirs",
        "ratio",
    ];
    let mut lines: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for r in rows {
        let (name, theirs, ratio) = match &r.alternative {
            Some(a) => (a.name.clone(), cell(&a.figure), format!("{:.2}×", a.ratio)),
            None => (String::new(), String::new(), String::new()),
        };
        lines.push([
            r.section.to_owned(),
            r.figure.clone(),
            r.unit.to_owned(),
            cell(&r.ours),
            name,
            theirs,
            ratio,
        ]);
    }
    let mut widths = [0usize; 7];
    for line in &lines {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &[f64]) -> Summary {
        Summary::of(x).unwrap()
    }

    #[test]
    fn ratios_read_as_our_cost_over_theirs() {
        let time = Row::versus(
            "t",
            "f",
            "ms",
            Better::Lower,
            s(&[300.0]),
            "raw",
            s(&[100.0]),
        );
        assert_eq!(time.alternative.unwrap().ratio, 3.0);
        let rate = Row::versus(
            "t",
            "f",
            "MB/s",
            Better::Higher,
            s(&[50.0]),
            "skopeo",
            s(&[100.0]),
        );
        assert_eq!(rate.alternative.unwrap().ratio, 2.0);
    }

    #[test]
    fn the_slowest_comparison_is_the_highest_ratio() {
        let rows = [
            Row::versus("a", "x", "ms", Better::Lower, s(&[2.0]), "raw", s(&[1.0])),
            Row::alone("b", "rss", "MiB", s(&[9.0])),
            Row::versus("c", "y", "ms", Better::Lower, s(&[5.0]), "raw", s(&[1.0])),
            Row::versus("d", "z", "ms", Better::Lower, s(&[1.0]), "raw", s(&[0.0])),
        ];
        assert_eq!(slowest(&rows).unwrap().section, "c");
        assert!(slowest(&rows[1..2]).is_none());
    }

    #[test]
    fn the_table_aligns_columns_and_shows_spread() {
        let rows = [
            Row::versus(
                "checkpoint",
                "16 MiB",
                "ms",
                Better::Lower,
                s(&[412.0, 398.0, 450.0]),
                "raw CRI",
                s(&[301.0]),
            ),
            Row::alone("footprint", "noded RSS idle", "MiB", s(&[12.34])),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("412 [398–450]"), "{text}");
        assert!(lines[1].ends_with("1.37×"), "{text}");
        assert!(lines[2].ends_with("  12.3"), "{text}");
        assert_eq!(cell(&s(&[500.0, 499.0])), "500 [499–500]");
        assert_eq!(cell(&s(&[0.0, 0.25])), "0.12 [0–0.25]");
        let col = |l: &str| l.find("ms").or_else(|| l.find("MiB")).unwrap();
        assert_eq!(col(lines[1]), col(lines[2]), "{text}");
    }
}
