//! The labelled data the safety heads are trained and measured on: PyRIT's
//! scorer evaluation CSVs (`pyrit==1.1.0`, `pyrit/datasets/scorer_evals/`,
//! fetched by `sagert models fetch pyrit-scorer-evals`), and the seeded,
//! stratified train/held-out split.
//!
//! # Labels
//!
//! - Refusal ([`REFUSAL_FILES`], columns `objective, assistant_response,
//!   human_score, data_type`): `human_score` is `1` when a person judged the
//!   response a refusal of the objective, `0` when it complied.
//! - Harm ([`HARM_FILES`], columns `harm_category, objective,
//!   assistant_response, human_score[_N]..., data_type`): one to three people
//!   scored each response on PyRIT's five-point harm scale (`1` not harmful to
//!   `5` extreme) normalised to `0, 0.25, 0.5, 0.75, 1`. A response is
//!   *harmful* when the mean of its scores is at least [`HARM_THRESHOLD`]
//!   (0.5: "moderate instances of harmful behaviour" or worse).
//!
//! Lines before the header that start with `#` are comments. A response that
//! appears twice with the same objective (`mini_hate_speech.csv` repeats rows
//! of `hate_speech_multi_score.csv`) is kept once, the first time it appears,
//! so that no text sits on both sides of the split.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::SafetyError;

/// The refusal CSVs, relative to the data folder.
pub const REFUSAL_FILES: [&str; 2] = ["refusal_scorer/refusal.csv", "refusal_scorer/refusal_extra.csv"];

/// The harm CSVs, relative to the data folder.
pub const HARM_FILES: [&str; 11] = [
    "harm/exploits.csv",
    "harm/hate_speech.csv",
    "harm/hate_speech_multi_score.csv",
    "harm/info_integrity.csv",
    "harm/mini_hate_speech.csv",
    "harm/privacy.csv",
    "harm/representational.csv",
    "harm/self_harm.csv",
    "harm/sexual.csv",
    "harm/violence.csv",
    "harm/violence_multi_score.csv",
];

/// The mean normalised human harm score from which a response counts as harmful.
pub const HARM_THRESHOLD: f32 = 0.5;

/// The share of each class that goes to the held-out part.
pub const HELD_OUT_FRACTION: f64 = 0.2;

/// The seed of the split the shipped heads were trained and measured with.
pub const SPLIT_SEED: u64 = 20_240_601;

/// One labelled response.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The CSV it came from (relative to the data folder) and its line.
    pub origin: String,
    /// The objective (the prompt the response answers).
    pub prompt: String,
    /// The model's response.
    pub response: String,
    /// The human score: 0 or 1 for refusal, the mean in `[0, 1]` for harm.
    pub score: f32,
    /// The binary label: refusal, or harmful.
    pub label: bool,
}

/// The refusal examples of the data folder `dir`.
pub fn load_refusal(dir: &Path) -> Result<Vec<Example>, SafetyError> {
    load(dir, &REFUSAL_FILES, |score| score >= 0.5)
}

/// The harm examples of the data folder `dir`.
pub fn load_harm(dir: &Path) -> Result<Vec<Example>, SafetyError> {
    load(dir, &HARM_FILES, |score| score >= HARM_THRESHOLD)
}

fn load(dir: &Path, files: &[&str], label: impl Fn(f32) -> bool) -> Result<Vec<Example>, SafetyError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for file in files {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(SafetyError::MissingData { path });
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|source| SafetyError::Io { path: path.clone(), source })?;
        for row in parse_rows(&text, &path)? {
            let key = (row.prompt.clone(), row.response.clone());
            if seen.insert(key) {
                out.push(Example {
                    origin: format!("{file}:{}", row.line),
                    label: label(row.score),
                    prompt: row.prompt,
                    response: row.response,
                    score: row.score,
                });
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
struct Row {
    line: usize,
    prompt: String,
    response: String,
    score: f32,
}

/// The rows of one PyRIT CSV: the objective, the response and the mean of the
/// `human_score*` columns.
fn parse_rows(text: &str, path: &Path) -> Result<Vec<Row>, SafetyError> {
    let bad = |line: usize, message: String| SafetyError::Csv { path: PathBuf::from(path), line, message };
    let records = parse_csv(text).map_err(|(line, message)| bad(line, message))?;
    let mut records = records.into_iter().skip_while(|(_, fields)| fields[0].starts_with('#'));
    let Some((header_line, header)) = records.next() else {
        return Err(bad(1, "no header row".into()));
    };
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(objective), Some(response)) = (column("objective"), column("assistant_response")) else {
        return Err(bad(header_line, "the header lacks `objective` or `assistant_response`".into()));
    };
    let scores: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("human_score")).collect();
    if scores.is_empty() {
        return Err(bad(header_line, "the header has no `human_score` column".into()));
    }
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        if fields.len() != header.len() {
            return Err(bad(line, format!("{} fields, the header has {}", fields.len(), header.len())));
        }
        let mut sum = 0f32;
        for &i in &scores {
            let value: f32 = fields[i]
                .trim()
                .parse()
                .map_err(|_| bad(line, format!("{}: `{}` is not a number", header[i], fields[i])))?;
            if !(0.0..=1.0).contains(&value) {
                return Err(bad(line, format!("{}: {value} is outside [0, 1]", header[i])));
            }
            sum += value;
        }
        rows.push(Row {
            line,
            prompt: fields[objective].clone(),
            response: fields[response].clone(),
            score: sum / scores.len() as f32,
        });
    }
    Ok(rows)
}

/// A CSV record: the line it starts on, and its fields.
pub(crate) type Record = (usize, Vec<String>);

/// RFC 4180 records: comma-separated fields, double-quoted fields that may
/// hold commas, newlines and `""` for a quote; `\r\n` or `\n` line ends. Each
/// record comes with the line it starts on. An unterminated quote is an error
/// (with the line of the record).
pub(crate) fn parse_csv(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((start, std::mem::take(&mut fields)));
                line += 1;
                start = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err((start, "a quoted field is not closed".into()));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((start, fields));
    }
    Ok(records)
}

/// Indices of a train/held-out split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Indices of the training examples, ascending.
    pub train: Vec<usize>,
    /// Indices of the held-out examples, ascending.
    pub held_out: Vec<usize>,
}

/// A stratified split of `examples`: of each label, the `fraction` (rounded)
/// whose seeded hash of (prompt, response) is smallest goes to the held-out
/// part. It depends only on the seed and the texts, not on their order, and
/// an example keeps its side when others are added.
pub fn split(examples: &[Example], fraction: f64, seed: u64) -> Split {
    let mut held_out = Vec::new();
    for class in [false, true] {
        let mut members: Vec<(u64, usize)> = examples
            .iter()
            .enumerate()
            .filter(|(_, e)| e.label == class)
            .map(|(i, e)| (text_hash(seed, &e.prompt, &e.response), i))
            .collect();
        members.sort_unstable();
        let take = (members.len() as f64 * fraction).round() as usize;
        held_out.extend(members[..take].iter().map(|&(_, i)| i));
    }
    held_out.sort_unstable();
    let held: HashSet<usize> = held_out.iter().copied().collect();
    let train = (0..examples.len()).filter(|i| !held.contains(i)).collect();
    Split { train, held_out }
}

/// FNV-1a over the seed and both texts, finished with splitmix64 so that
/// nearby seeds give unrelated orders.
fn text_hash(seed: u64, prompt: &str, response: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = seed.to_le_bytes();
    for &b in bytes.iter().chain(prompt.as_bytes()).chain(&[0xff]).chain(response.as_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_newlines_and_crlf() {
        let text = "# comment, with comma\r\na,b,c\r\n1,\"x, \"\"y\"\"\nz\",3\n\n4,,\"\"\n";
        let records = parse_csv(text).unwrap();
        assert_eq!(records[0], (1, vec!["# comment".to_string(), " with comma".into()]));
        assert_eq!(records[1], (2, vec!["a".to_string(), "b".into(), "c".into()]));
        assert_eq!(records[2], (3, vec!["1".to_string(), "x, \"y\"\nz".into(), "3".into()]));
        assert_eq!(records[3], (5, vec![String::new()]));
        assert_eq!(records[4], (6, vec!["4".to_string(), String::new(), String::new()]));
        assert_eq!(parse_csv("a,\"open\nb").unwrap_err().0, 1);
    }

    #[test]
    fn rows_average_the_human_scores_and_name_bad_lines() {
        let text =
            "# v=1, x\nharm_category,objective,assistant_response,human_score_1,human_score_2,data_type\n\
                    c,placeholder objective,\"placeholder\nresponse\",0.5,1,text\nc,o,r,0,0.25,text\n";
        let rows = parse_rows(text, Path::new("t.csv")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].score), (3, 0.75));
        assert_eq!(rows[0].response, "placeholder\nresponse");
        assert_eq!((rows[1].line, rows[1].score), (5, 0.125));
        let err = parse_rows("objective,assistant_response,human_score\no,r,high\n", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.csv:2") && err.contains("human_score"), "{err}");
    }

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                origin: format!("t.csv:{i}"),
                prompt: format!("placeholder objective {}", i % 7),
                response: format!("placeholder response {i}"),
                score: 0.0,
                label: i % 3 == 0,
            })
            .collect()
    }

    #[test]
    fn split_is_stratified_disjoint_complete_and_deterministic() {
        let data = examples(100);
        let a = split(&data, 0.2, 7);
        assert_eq!(a, split(&data, 0.2, 7));
        let positives = data.iter().filter(|e| e.label).count();
        let held_pos = a.held_out.iter().filter(|&&i| data[i].label).count();
        assert_eq!(held_pos, (positives as f64 * 0.2).round() as usize);
        assert_eq!(a.held_out.len() - held_pos, ((100 - positives) as f64 * 0.2).round() as usize);
        let mut all: Vec<usize> = a.train.iter().chain(&a.held_out).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(a.held_out, split(&data, 0.2, 8).held_out);
        // The order of the examples does not matter.
        let reversed: Vec<Example> = data.iter().rev().cloned().collect();
        let b = split(&reversed, 0.2, 7);
        let mut back: Vec<usize> = b.held_out.iter().map(|&i| 99 - i).collect();
        back.sort_unstable();
        assert_eq!(back, a.held_out);
    }
}
