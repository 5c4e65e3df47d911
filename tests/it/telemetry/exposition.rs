//! A small, strict checker of the Prometheus text exposition format 0.0.4 as sosrouter writes it:
//! every family has `# HELP` then `# TYPE` before its samples; every sample line is
//! `name{label="value",...} value` with a known family's name; label values use only the `\\`,
//! `\"` and `\n` escapes; no series appears twice; names start with `sosrouter_` and counters end in
//! `_total`; histogram buckets rise in `le`, are cumulative, end with `le="+Inf"` equal to `_count`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Every sample, keyed `name{k="v",...}` with labels in written order, and the family types.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: BTreeMap<String, f64>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// The value of one series; panics with the page's series when it is missing.
    pub fn get(&self, series: &str) -> f64 {
        match self.samples.get(series) {
            Some(v) => *v,
            None => panic!("no series {series}; have:\n{:#?}", self.samples.keys()),
        }
    }
}

pub fn parse(text: &str) -> Result<Scrape, String> {
    if !text.ends_with('\n') {
        return Err("page does not end with a newline".into());
    }
    let mut out = Scrape::default();
    let mut help: HashSet<String> = HashSet::new();
    let mut current: Option<(String, String)> = None; // (family, type)
    let mut hist: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new(); // series -> (le, count)
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: `{line}`", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            check_name(name).map_err(at)?;
            if !help.insert(name.to_string()) || out.types.contains_key(name) {
                return Err(at("family declared twice".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type".into()))?;
            if !help.contains(name) || out.types.contains_key(name) {
                return Err(at("TYPE not right after its HELP".into()));
            }
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(at("counter name without _total".into()));
            }
            out.types.insert(name.to_string(), kind.to_string());
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(at("unexpected comment or blank line".into()));
        }
        let (name, labels, value) = sample(line).map_err(at)?;
        let (family, kind) = current
            .clone()
            .ok_or_else(|| at("sample before any TYPE".into()))?;
        let suffix = name.strip_prefix(family.as_str()).unwrap_or("?");
        let ok = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"].contains(&suffix),
            _ => suffix.is_empty(),
        };
        if !ok {
            return Err(at(format!("sample of another family than {family}")));
        }
        let key = series(&name, &labels);
        if out.samples.insert(key.clone(), value).is_some() {
            return Err(at("series repeated".into()));
        }
        if kind == "histogram" {
            let rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            let base = series(&family, &rest);
            match suffix {
                "_bucket" => {
                    let le = labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .ok_or_else(|| at("bucket without le".into()))?;
                    let le = number(&le.1).map_err(at)?;
                    hist.entry(base).or_default().push((le, value));
                }
                "_count" => {
                    counts.insert(base, value);
                }
                _ => {}
            }
        }
    }
    for (base, buckets) in &hist {
        for w in buckets.windows(2) {
            if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
                return Err(format!(
                    "{base}: buckets not rising and cumulative: {buckets:?}"
                ));
            }
        }
        let last = buckets.last().expect("a bucket");
        if last.0 != f64::INFINITY {
            return Err(format!("{base}: last bucket is not +Inf"));
        }
        if counts.get(base) != Some(&last.1) {
            return Err(format!(
                "{base}: +Inf bucket {} != _count {:?}",
                last.1,
                counts.get(base)
            ));
        }
    }
    Ok(out)
}

fn series(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with("sosrouter_")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name}"))
    }
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("bad number {s}")),
    }
}

type Labels = Vec<(String, String)>;

/// `name{labels} value`; label values returned unescaped.
fn sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let b = line.as_bytes();
    let mut i = name_end;
    let mut labels = Vec::new();
    if b[i] == b'{' {
        i += 1;
        loop {
            let eq = line[i..].find('=').ok_or("label without =")? + i;
            let key = &line[i..eq];
            let key_ok = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !key_ok {
                return Err(format!("bad label name `{key}`"));
            }
            if b.get(eq + 1) != Some(&b'"') {
                return Err("label value not quoted".into());
            }
            i = eq + 2;
            let mut value = String::new();
            loop {
                let c = line[i..].chars().next().ok_or("unterminated label value")?;
                i += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let e = *b.get(i).ok_or("dangling escape")?;
                        i += 1;
                        value.push(match e {
                            b'\\' => '\\',
                            b'"' => '"',
                            b'n' => '\n',
                            _ => return Err(format!("bad escape \\{}", e as char)),
                        });
                    }
                    c => value.push(c),
                }
            }
            labels.push((key.to_string(), value));
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err("expected , or } after a label".into()),
            }
        }
    }
    let value = line[i..]
        .strip_prefix(' ')
        .ok_or("no space before the value")?;
    if value.contains(' ') {
        return Err("timestamps or extra fields are not expected".into());
    }
    Ok((name.to_string(), labels, number(value)?))
}
