//! The Keras text tokenizer (`keras.preprocessing.text.Tokenizer`, word level)
//! and `pad_sequences`, reimplemented to give the same ids.
//!
//! Keras turns a text into ids in four steps, done here in the same order:
//!
//! 1. lower-case it (Python's `str.lower`; Rust's [`str::to_lowercase`] applies
//!    the same full Unicode mapping, final sigma included);
//! 2. replace every character of `filters` by `split`;
//! 3. split on `split` (exactly that string, not on any whitespace: a
//!    non-breaking space stays inside a word) and drop empty words;
//! 4. look each word up in `word_index`: a word whose index is `>= num_words`,
//!    or that is not there, becomes the `oov_token`'s index when there is one,
//!    and is dropped otherwise.
//!
//! [`KerasTokenizer::encode`] then pads or truncates to `maxlen` like
//! `pad_sequences(seqs, maxlen)` (value 0; "pre" drops or pads at the start).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::ToxicityError;

/// The `format` value `scripts/convert-toxicity.py` writes into `tokenizer.json`.
pub const TOKENIZER_FORMAT: &str = "sagert-keras-tokenizer/1";

/// Keras's default `filters`: ASCII punctuation except the apostrophe, tab, newline.
pub const KERAS_FILTERS: &str = "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n";

/// Which end of a sequence `pad_sequences` pads or truncates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// At the start (Keras's default for both padding and truncating).
    Pre,
    /// At the end.
    Post,
}

/// The contents of `tokenizer.json`: the Keras `Tokenizer`'s settings, its
/// `word_index`, and the `pad_sequences` settings the model was used with.
///
/// `Default` gives Keras's defaults with `maxlen` 100 and an empty `word_index`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TokenizerConfig {
    /// [`TOKENIZER_FORMAT`]; checked when present.
    pub format: Option<String>,
    /// Lower-case before splitting.
    pub lower: bool,
    /// Characters replaced by `split` before splitting.
    pub filters: String,
    /// The word separator (one string, not a character class).
    pub split: String,
    /// Character-level tokenizers are not supported; must be false.
    pub char_level: bool,
    /// The word that stands for unknown words, if the tokenizer had one.
    pub oov_token: Option<String>,
    /// Only indices below this are kept (Keras: `None` or 0 keeps all).
    pub num_words: Option<u32>,
    /// The padded length.
    pub maxlen: usize,
    /// Where `pad_sequences` pads.
    pub padding: Side,
    /// Which end `pad_sequences` cuts from sequences longer than `maxlen`.
    pub truncating: Side,
    /// Word to index (1-based; 0 is padding).
    pub word_index: HashMap<String, u32>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            format: None,
            lower: true,
            filters: KERAS_FILTERS.to_owned(),
            split: " ".to_owned(),
            char_level: false,
            oov_token: None,
            num_words: None,
            maxlen: 100,
            padding: Side::Pre,
            truncating: Side::Pre,
            word_index: HashMap::new(),
        }
    }
}

/// A Keras word tokenizer with its padding settings; see the module docs.
#[derive(Debug, Clone)]
pub struct KerasTokenizer {
    config: TokenizerConfig,
    filters: HashSet<char>,
    oov_index: Option<u32>,
}

impl KerasTokenizer {
    /// Checks `config` (`origin` names it in errors) and builds the tokenizer.
    pub fn new(config: TokenizerConfig, origin: &str) -> Result<Self, ToxicityError> {
        let invalid = |reason: String| ToxicityError::Tokenizer { origin: origin.to_owned(), reason };
        if let Some(format) = &config.format {
            if format != TOKENIZER_FORMAT {
                return Err(invalid(format!("format is {format:?}, expected {TOKENIZER_FORMAT:?}")));
            }
        }
        if config.char_level {
            return Err(invalid("char_level tokenizers are not supported".into()));
        }
        if config.split.is_empty() {
            return Err(invalid("split is empty".into()));
        }
        if config.maxlen == 0 {
            return Err(invalid("maxlen is 0".into()));
        }
        if let Some((word, _)) = config.word_index.iter().find(|(_, &i)| i == 0) {
            return Err(invalid(format!("word {word:?} has index 0, which is padding")));
        }
        let oov_index = match &config.oov_token {
            Some(oov) => Some(
                *config
                    .word_index
                    .get(oov)
                    .ok_or_else(|| invalid(format!("oov_token {oov:?} is not in word_index")))?,
            ),
            None => None,
        };
        let filters = config.filters.chars().collect();
        Ok(KerasTokenizer { config, filters, oov_index })
    }

    /// Parses and checks a `tokenizer.json` text.
    pub fn from_json_str(json: &str, origin: &str) -> Result<Self, ToxicityError> {
        let config = serde_json::from_str(json)
            .map_err(|e| ToxicityError::Tokenizer { origin: origin.to_owned(), reason: e.to_string() })?;
        Self::new(config, origin)
    }

    /// Reads a `tokenizer.json` written by `scripts/convert-toxicity.py`.
    pub fn from_file(path: &Path) -> Result<Self, ToxicityError> {
        let json = std::fs::read_to_string(path)
            .map_err(|source| ToxicityError::Io { path: path.to_owned(), source })?;
        Self::from_json_str(&json, &path.display().to_string())
    }

    /// The configuration the tokenizer was built from.
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The padded length of [`encode`](Self::encode).
    pub fn maxlen(&self) -> usize {
        self.config.maxlen
    }

    /// The largest id the tokenizer can produce (0 when `word_index` is empty).
    pub fn max_id(&self) -> u32 {
        let limit = self.num_words_limit();
        self.config.word_index.values().copied().filter(|&i| limit.is_none_or(|n| i < n)).max().unwrap_or(0)
    }

    /// Keras's `text_to_word_sequence`: lower-case, filters to `split`, split,
    /// drop empty words.
    pub fn words(&self, text: &str) -> Vec<String> {
        let lowered;
        let text = if self.config.lower {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let mut filtered = String::with_capacity(text.len());
        for c in text.chars() {
            if self.filters.contains(&c) {
                filtered.push_str(&self.config.split);
            } else {
                filtered.push(c);
            }
        }
        filtered.split(self.config.split.as_str()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
    }

    /// Keras's `texts_to_sequences` for one text: the ids, unpadded.
    pub fn text_to_sequence(&self, text: &str) -> Vec<u32> {
        let limit = self.num_words_limit();
        self.words(text)
            .iter()
            .filter_map(|w| match self.config.word_index.get(w) {
                Some(&i) if limit.is_none_or(|n| i < n) => Some(i),
                _ => self.oov_index,
            })
            .collect()
    }

    /// Keras's `pad_sequences` for one sequence: exactly `maxlen` ids.
    pub fn pad(&self, ids: &[u32]) -> Vec<u32> {
        let n = self.config.maxlen;
        let kept = if ids.len() <= n {
            ids
        } else {
            match self.config.truncating {
                Side::Pre => &ids[ids.len() - n..],
                Side::Post => &ids[..n],
            }
        };
        let mut out = Vec::with_capacity(n);
        if self.config.padding == Side::Pre {
            out.resize(n - kept.len(), 0);
        }
        out.extend_from_slice(kept);
        out.resize(n, 0);
        out
    }

    /// The model's input for `text`: [`text_to_sequence`](Self::text_to_sequence),
    /// then [`pad`](Self::pad).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.pad(&self.text_to_sequence(text))
    }

    /// `num_words` as Keras applies it: `None` and 0 mean no limit.
    fn num_words_limit(&self) -> Option<u32> {
        self.config.num_words.filter(|&n| n > 0)
    }
}
