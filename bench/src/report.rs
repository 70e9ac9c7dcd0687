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
    /// The target for this figure, and whether this run met it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Verdict>,
    /// For a count of failures: why they failed (JSON only; the table keeps to figures).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

/// One distinct failure message, how many failures gave it, and the container runtime they
/// came from (as its CRI `Version` names it), so the JSON of runs on each runtime compare.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cause {
    pub runtime: String,
    pub message: String,
    pub count: usize,
}

impl Cause {
    /// Each distinct message once with its count, the most frequent first (then by message).
    pub fn tally(runtime: &str, messages: impl IntoIterator<Item = String>) -> Vec<Self> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for message in messages {
            *counts.entry(message).or_default() += 1;
        }
        let mut causes: Vec<Self> = counts
            .into_iter()
            .map(|(message, count)| Self {
                runtime: runtime.to_owned(),
                message,
                count,
            })
            .collect();
        // Stable: equal counts stay in message order.
        causes.sort_by_key(|c| std::cmp::Reverse(c.count));
        causes
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Alternative {
    pub name: String,
    pub figure: Summary,
    /// Our cost over theirs (see [`Better`]).
    pub ratio: f64,
}

/// What a figure should reach, compared on medians.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Against the alternative, in the figure's own direction: a cost at most
    /// `factor` × theirs + `plus` (in the row's unit), a rate at least `factor` × theirs (so a
    /// ratio, theirs / ours, of at most 1 / `factor`).
    Relative { factor: f64, plus: f64 },
    /// At most this much, in the row's unit (for a figure without an alternative).
    AtMost(f64),
}

impl Target {
    pub fn factor(factor: f64) -> Self {
        Self::Relative { factor, plus: 0.0 }
    }

    /// Whether `ours` meets the target; `None` for a relative target without an alternative.
    pub fn met(self, better: Better, ours: f64, theirs: Option<f64>) -> Option<bool> {
        Some(match (self, better) {
            (Self::AtMost(bound), _) => ours <= bound,
            (Self::Relative { factor, plus }, Better::Lower) => ours <= factor * theirs? + plus,
            (Self::Relative { factor, plus }, Better::Higher) => ours >= factor * theirs? - plus,
        })
    }

    /// Short text for the table: `≤1.1×+50 ms`, `≥0.8×`, `≤15 MiB`.
    pub fn text(self, better: Better, unit: &str) -> String {
        match self {
            Self::AtMost(bound) => format!("≤{bound} {unit}"),
            Self::Relative { factor, plus } => {
                let sign = match better {
                    Better::Lower => ('≤', '+'),
                    Better::Higher => ('≥', '-'),
                };
                let allowance = if plus > 0.0 {
                    format!("{}{plus} {unit}", sign.1)
                } else {
                    String::new()
                };
                format!("{}{factor}×{allowance}", sign.0)
            }
        }
    }
}

/// A target and how this run fared against it.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub target: Target,
    pub text: String,
    pub met: bool,
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
            target: None,
            causes: Vec::new(),
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

    /// The row judged against `target`. A relative target needs the row's alternative.
    pub fn with_target(mut self, target: Target) -> Self {
        let theirs = self.alternative.as_ref().map(|a| a.figure.median);
        let met = target
            .met(self.better, self.ours.median, theirs)
            .expect("a relative target is set on a row with an alternative");
        self.target = Some(Verdict {
            target,
            text: target.text(self.better, self.unit),
            met,
        });
        self
    }

    /// The row with why its failures failed.
    pub fn with_causes(mut self, causes: Vec<Cause>) -> Self {
        self.causes = causes;
        self
    }
}

/// The rows whose target this run missed.
pub fn missed(rows: &[Row]) -> impl Iterator<Item = &Row> {
    rows.iter()
        .filter(|r| r.target.as_ref().is_some_and(|t| !t.met))
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

/// A fixed-width table: section, figure, unit, ours, the alternative and its figure, ratio,
/// target and whether it was met.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "section",
        "figure",
        "unit",
        "ours: median [min–max]",
        "alternative",
        "theirs",
        "ratio",
        "target",
        "",
    ];
    let mut lines: Vec<[String; 9]> = vec![header.map(str::to_owned)];
    for r in rows {
        let (name, theirs, ratio) = match &r.alternative {
            Some(a) => (a.name.clone(), cell(&a.figure), format!("{:.2}×", a.ratio)),
            None => (String::new(), String::new(), String::new()),
        };
        let (target, met) = match &r.target {
            Some(v) => (
                v.text.clone(),
                if v.met { "met" } else { "MISSED" }.to_owned(),
            ),
            None => (String::new(), String::new()),
        };
        lines.push([
            r.section.to_owned(),
            r.figure.clone(),
            r.unit.to_owned(),
            cell(&r.ours),
            name,
            theirs,
            ratio,
            target,
            met,
        ]);
    }
    let mut widths = [0usize; 9];
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

    #[test]
    fn targets_are_met_on_medians_in_the_figures_direction() {
        let checkpoint = Target::Relative {
            factor: 1.1,
            plus: 50.0,
        };
        // 1.1 × 300 + 50 = 380.
        assert_eq!(
            checkpoint.met(Better::Lower, 380.0, Some(300.0)),
            Some(true)
        );
        assert_eq!(
            checkpoint.met(Better::Lower, 381.0, Some(300.0)),
            Some(false)
        );
        assert_eq!(checkpoint.met(Better::Lower, 1.0, None), None);
        // A rate of at least 0.8 × the floor: a ratio (theirs / ours) of at most 1.25.
        let floor = Target::factor(0.8);
        assert_eq!(floor.met(Better::Higher, 80.0, Some(100.0)), Some(true));
        assert_eq!(floor.met(Better::Higher, 79.0, Some(100.0)), Some(false));
        assert_eq!(
            Target::factor(1.3).met(Better::Lower, 13.0, Some(10.0)),
            Some(true)
        );
        assert_eq!(
            Target::factor(1.3).met(Better::Lower, 14.0, Some(10.0)),
            Some(false)
        );
        assert_eq!(
            Target::AtMost(15.0).met(Better::Lower, 15.0, None),
            Some(true)
        );
        assert_eq!(
            Target::AtMost(15.0).met(Better::Lower, 31.2, None),
            Some(false)
        );
    }

    #[test]
    fn targets_read_in_the_figures_direction() {
        let checkpoint = Target::Relative {
            factor: 1.1,
            plus: 50.0,
        };
        assert_eq!(checkpoint.text(Better::Lower, "ms"), "≤1.1×+50 ms");
        assert_eq!(Target::factor(0.8).text(Better::Higher, "MB/s"), "≥0.8×");
        assert_eq!(Target::AtMost(15.0).text(Better::Lower, "MiB"), "≤15 MiB");
    }

    #[test]
    fn the_table_shows_targets_and_whether_they_were_met() {
        let rows = [
            Row::versus("a", "x", "ms", Better::Lower, s(&[2.0]), "raw", s(&[1.0]))
                .with_target(Target::factor(1.3)),
            Row::alone("b", "rss", "MiB", s(&[9.0])).with_target(Target::AtMost(15.0)),
            Row::alone("c", "cpu", "%", s(&[9.0])),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].ends_with("2.00×  ≤1.3×    MISSED"), "{text}");
        assert!(lines[2].ends_with("  ≤15 MiB  met"), "{text}");
        assert!(lines[3].ends_with("%     9"), "{text}");
        let missed: Vec<&str> = missed(&rows).map(|r| r.section).collect();
        assert_eq!(missed, ["a"]);
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["target"]["met"], false);
        assert_eq!(json["target"]["relative"]["factor"], 1.3);
        assert!(json.get("causes").is_none(), "{json}");
    }

    #[test]
    fn causes_count_each_message_once_and_go_to_the_json() {
        let messages = [
            "criu failed: type DUMP",
            "unable to freeze",
            "criu failed: type DUMP",
        ];
        let causes = Cause::tally("cri-o", messages.map(str::to_owned));
        let cause = |message: &str, count| Cause {
            runtime: "cri-o".into(),
            message: message.into(),
            count,
        };
        assert_eq!(
            causes,
            [
                cause("criu failed: type DUMP", 2),
                cause("unable to freeze", 1)
            ]
        );
        let row = Row::alone("7 scale", "Failed", "count", s(&[3.0])).with_causes(causes);
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(
            json["causes"][0],
            serde_json::json!({"runtime": "cri-o", "message": "criu failed: type DUMP", "count": 2})
        );
        assert!(table(&[row]).lines().nth(1).unwrap().ends_with("count  3"));
    }
}
