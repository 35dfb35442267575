//! What a benchmark part reports: samples summarised as min / median /
//! p90 / max, markdown tables, the machine it ran on, and `BENCHMARKS.md`
//! put together from the parts' sections.

use std::fmt::Write as _;
use std::path::Path;

/// Measured values of one figure.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds a value.
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0 to 1), nearest rank; NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return f64::NAN;
        }
        let at = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        sorted[at]
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// `| n | min | median | p90 | max |` cells, with `digits` decimals.
    pub fn cells(&self, digits: usize) -> String {
        format!(
            "{} | {:.digits$} | {:.digits$} | {:.digits$} | {:.digits$}",
            self.len(),
            self.quantile(0.0),
            self.median(),
            self.quantile(0.9),
            self.quantile(1.0),
        )
    }
}

/// The header of a table whose rows end in [`Samples::cells`].
pub fn samples_header(first: &str) -> String {
    format!("| {first} | n | min | median | p90 | max |\n|---|---|---|---|---|---|\n")
}

/// A ratio `a / b`, formatted; `-` when undefined.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        let r = a / b;
        if r < 0.1 {
            format!("{r:.4}")
        } else {
            format!("{r:.2}")
        }
    } else {
        "-".to_owned()
    }
}

/// One part's report: a section of `BENCHMARKS.md`.
#[derive(Debug, Clone)]
pub struct Section {
    /// The part's name (`scripts/bench.sh NAME`).
    pub part: String,
    /// Its heading.
    pub title: String,
    /// Markdown under the heading.
    pub body: String,
}

impl Section {
    /// The section as it stands in the file, between markers that let one
    /// part be measured again without touching the others.
    pub fn render(&self, machine: &Machine) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "<!-- part: {} -->", self.part);
        let _ = writeln!(out, "## {}\n", self.title);
        let _ = writeln!(
            out,
            "`scripts/bench.sh {}`, {} on {}.\n",
            self.part, machine.date, machine.summary
        );
        out.push_str(self.body.trim_end());
        let _ = writeln!(out, "\n<!-- end: {} -->", self.part);
        out
    }
}

/// The machine and the date of a run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Cores, memory, kernel, CPU model.
    pub summary: String,
    /// `YYYY-MM-DD`.
    pub date: String,
}

impl Machine {
    /// This machine, today.
    pub fn here() -> Self {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown CPU", |(_, m)| m.trim())
            .to_owned();
        let date = std::process::Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Self {
            summary: format!(
                "{cores} cores ({model}), {:.0} GiB, Linux {}",
                mem_kib / 1_048_576.0,
                kernel.trim()
            ),
            date,
        }
    }
}

/// The file's head: what it is and how it is made.
fn head(machine: &Machine, versions: &[(String, String)]) -> String {
    let mut out = String::from(
        "# Benchmarks\n\n\
         Written by `scripts/bench.sh all` (release build; every system on this \
         machine, side by side in the same run, trials interleaved where two \
         systems are compared). Each section says the command that measures it \
         again and the machine it ran on; ratios are mob / peer from the same \
         run. These machines are shared and noisy: read a ratio from one run, \
         not an absolute time across runs.\n\n",
    );
    let _ = writeln!(
        out,
        "Last full run: {} on {}.\n",
        machine.date, machine.summary
    );
    if !versions.is_empty() {
        out.push_str("| system | version |\n|---|---|\n");
        for (system, version) in versions {
            let _ = writeln!(out, "| {system} | {version} |");
        }
        out.push('\n');
    }
    out
}

/// Writes `path` from scratch: the head and every section, in order.
pub fn write_all(
    path: &Path,
    sections: &[Section],
    machine: &Machine,
    versions: &[(String, String)],
) -> std::io::Result<()> {
    let mut out = head(machine, versions);
    for section in sections {
        out.push_str(&section.render(machine));
        out.push('\n');
    }
    std::fs::write(path, out)
}

/// Replaces the sections of `path` that these parts wrote (or appends
/// them); keeps the rest of the file as it was.
pub fn replace_sections(
    path: &Path,
    sections: &[Section],
    machine: &Machine,
) -> std::io::Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    for section in sections {
        let begin = format!("<!-- part: {} -->", section.part);
        let end = format!("<!-- end: {} -->", section.part);
        let rendered = section.render(machine);
        match (text.find(&begin), text.find(&end)) {
            (Some(b), Some(e)) if e > b => {
                let after = e + end.len();
                let after = text[after..]
                    .strip_prefix('\n')
                    .map_or(after, |_| after + 1);
                text.replace_range(b..after, &rendered);
            }
            // A new part goes after the last one the file has (or at its
            // end): the parts stay together, ahead of any prose after them.
            _ => match text.rfind("<!-- end: ") {
                Some(at) => {
                    let line_end = text[at..].find('\n').map_or(text.len(), |e| at + e + 1);
                    text.insert_str(line_end, &format!("\n{rendered}"));
                }
                None => {
                    if !text.ends_with("\n\n") && !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&rendered);
                }
            },
        }
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_of_the_sorted_values() {
        let s = Samples(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(s.quantile(0.0), 1.0);
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.quantile(1.0), 5.0);
        assert!(Samples::default().median().is_nan());
    }

    #[test]
    fn one_part_measured_again_replaces_only_its_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        let machine = Machine {
            summary: "test machine".into(),
            date: "2026-12-04".into(),
        };
        let section = |part: &str, body: &str| Section {
            part: part.into(),
            title: part.to_uppercase(),
            body: body.into(),
        };
        write_all(
            &path,
            &[section("a", "old a"), section("b", "old b")],
            &machine,
            &[],
        )
        .unwrap();
        replace_sections(&path, &[section("a", "new a")], &machine).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("new a") && !text.contains("old a"), "{text}");
        assert!(text.contains("old b"), "{text}");
        assert_eq!(text.matches("<!-- part: a -->").count(), 1, "{text}");
        std::fs::write(&path, format!("{text}\n## Prose after the parts\n")).unwrap();
        replace_sections(&path, &[section("c", "c body")], &machine).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("old b") && text.contains("c body"), "{text}");
        assert!(
            text.find("c body") < text.find("## Prose after the parts"),
            "a new part joins the others: {text}"
        );
    }
}
