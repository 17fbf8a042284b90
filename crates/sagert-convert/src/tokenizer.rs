//! The tokenizer between GGUF metadata (`tokenizer.ggml.*`) and transformers'
//! `tokenizer.json` / `tokenizer_config.json`.
//!
//! Supported vocabulary type: `gpt2` (byte-level BPE), with the pre-tokenizers
//! llama.cpp names `smollm` / `starcoder` / `refact` / `command-r` /
//! `codeshell` / `exaone` / `minerva-7b` (digits split one by one, then GPT-2's
//! regex), `gpt-2` / `mpt` / `olmo` / `jais` (GPT-2's regex), `llama-bpe` /
//! `llama3` / `smaug-bpe` and `qwen2` / `stablelm2` / `deepseek-r1-qwen`.
//! A transformers pre-tokenizer is mapped back to the first name of its group
//! (`smollm`, `gpt-2`, `llama-bpe`, `qwen2`); names llama.cpp does not know would
//! make it refuse the file. Each is built with the same regular expressions llama.cpp's
//! `llama-vocab.cpp` uses for that name, so the ids agree with llama.cpp's
//! (checked by `tests/tokenizer.rs`). SentencePiece vocabularies (`llama`) are
//! refused with an error naming the type.
//!
//! Token types follow llama.cpp: 1 normal, 3 control (an added special token in
//! transformers), 4 user-defined (an added non-special token), 5 unused
//! (padding rows of a vocabulary larger than the tokenizer's).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Map, Value as Json};

use crate::ConvertError;

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

// GPT-2's regex is `tokenizers`' ByteLevel pre-tokenizer's own:
// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
// llama.cpp's list without the final `\s+`, which its hand-written GPT-2
// splitter applies all the same.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a `tokenizer.ggml.pre` name splits text before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreSplit {
    /// Every digit alone, then GPT-2's regex.
    DigitsThenGpt2,
    Gpt2,
    Llama3,
    Qwen2,
}

fn pre_split(name: &str) -> Option<PreSplit> {
    Some(match name {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            PreSplit::DigitsThenGpt2
        }
        // Not "default": llama.cpp's default pre-tokenizer is a different list.
        "gpt-2" | "mpt" | "olmo" | "jais" => PreSplit::Gpt2,
        "llama-bpe" | "llama3" | "smaug-bpe" => PreSplit::Llama3,
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => PreSplit::Qwen2,
        _ => return None,
    })
}

fn split(pattern: &str) -> Json {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Json {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

impl PreSplit {
    fn pre_tokenizer(self) -> Json {
        let seq = |parts: Vec<Json>| json!({"type": "Sequence", "pretokenizers": parts});
        match self {
            PreSplit::DigitsThenGpt2 => seq(vec![split(r"\p{N}"), byte_level(true)]),
            PreSplit::Gpt2 => byte_level(true),
            PreSplit::Llama3 => seq(vec![split(LLAMA3_REGEX), byte_level(false)]),
            PreSplit::Qwen2 => seq(vec![split(QWEN2_REGEX), byte_level(false)]),
        }
    }

    /// The llama.cpp name for a transformers pre-tokenizer we recognise.
    fn recognise(pre: &Json) -> Option<&'static str> {
        let kind = |v: &Json| v.get("type").and_then(Json::as_str).map(str::to_string);
        let regex = |v: &Json| v.pointer("/pattern/Regex").and_then(Json::as_str).map(str::to_string);
        let byte_level_regex = |v: &Json| {
            kind(v).as_deref() == Some("ByteLevel")
                && v.get("use_regex").and_then(Json::as_bool) != Some(false)
        };
        let digits = |v: &Json| {
            (kind(v).as_deref() == Some("Digits")
                && v.get("individual_digits").and_then(Json::as_bool) == Some(true))
                || (kind(v).as_deref() == Some("Split") && regex(v).as_deref() == Some(r"\p{N}"))
        };
        if byte_level_regex(pre) {
            return Some("gpt-2");
        }
        let parts = pre.get("pretokenizers").and_then(Json::as_array)?;
        match parts.as_slice() {
            [d, b] if digits(d) && byte_level_regex(b) => Some("smollm"),
            [s, b] if kind(b).as_deref() == Some("ByteLevel") => match regex(s).as_deref() {
                Some(LLAMA3_REGEX) => Some("llama-bpe"),
                Some(QWEN2_REGEX) => Some("qwen2"),
                _ => None,
            },
            [b] if byte_level_regex(b) => Some("gpt-2"),
            _ => None,
        }
    }
}

/// A tokenizer as GGUF stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: `gpt2` here.
    pub model: String,
    /// `tokenizer.ggml.pre`: which pre-tokenizer llama.cpp runs.
    pub pre: String,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
}

fn strings(path: &Path, meta: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, ConvertError> {
    let Some(Value::Array(items)) = meta.get(key) else {
        return Err(ConvertError::missing(path, format!("metadata `{key}` missing or not an array")));
    };
    items
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<Result<_, _>>()
        .map_err(|_| ConvertError::missing(path, format!("metadata `{key}` is not an array of strings")))
}

impl Vocab {
    /// Read `tokenizer.ggml.*` from GGUF metadata.
    pub fn from_gguf(path: &Path, meta: &HashMap<String, Value>) -> Result<Vocab, ConvertError> {
        let text = |key: &str| meta.get(key).and_then(|v| v.to_string().ok()).cloned();
        let model = text("tokenizer.ggml.model")
            .ok_or_else(|| ConvertError::missing(path, "no tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(ConvertError::unsupported(
                path,
                format!("tokenizer type `{model}` (tokenizer.ggml.model); supported: gpt2 (byte-level BPE)"),
            ));
        }
        let pre = text("tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
        if pre_split(&pre).is_none() {
            return Err(ConvertError::unsupported(
                path,
                format!("pre-tokenizer `{pre}` (tokenizer.ggml.pre)"),
            ));
        }
        let tokens = strings(path, meta, "tokenizer.ggml.tokens")?;
        let token_types = match meta.get("tokenizer.ggml.token_type") {
            Some(Value::Array(types)) => types.iter().map(|v| v.to_i32().unwrap_or(NORMAL)).collect(),
            _ => vec![NORMAL; tokens.len()],
        };
        let id = |key: &str| meta.get(key).and_then(|v| v.to_u32().ok());
        let flag = |key: &str| meta.get(key).and_then(|v| v.to_bool().ok());
        Ok(Vocab {
            model,
            pre,
            merges: strings(path, meta, "tokenizer.ggml.merges")?,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            unk: id("tokenizer.ggml.unknown_token_id"),
            pad: id("tokenizer.ggml.padding_token_id"),
            // Absent: false. llama.cpp's default depends on the pre-tokenizer;
            // the files this crate writes always carry the key.
            add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(false),
            add_eos: flag("tokenizer.ggml.add_eos_token").unwrap_or(false),
            chat_template: text("tokenizer.chat_template"),
            tokens,
            token_types,
        })
    }

    /// The `tokenizer.ggml.*` metadata (and `tokenizer.chat_template`).
    pub fn to_gguf(&self) -> Vec<(String, Value)> {
        let s = |v: &str| Value::String(v.to_string());
        let mut kv = vec![
            ("tokenizer.ggml.model".to_string(), s(&self.model)),
            ("tokenizer.ggml.pre".to_string(), s(&self.pre)),
            ("tokenizer.ggml.tokens".to_string(), Value::Array(self.tokens.iter().map(|t| s(t)).collect())),
            (
                "tokenizer.ggml.token_type".to_string(),
                Value::Array(self.token_types.iter().map(|&t| Value::I32(t)).collect()),
            ),
            ("tokenizer.ggml.merges".to_string(), Value::Array(self.merges.iter().map(|m| s(m)).collect())),
        ];
        for (key, id) in [("bos", self.bos), ("eos", self.eos), ("unknown", self.unk), ("padding", self.pad)]
        {
            if let Some(id) = id {
                kv.push((format!("tokenizer.ggml.{key}_token_id"), Value::U32(id)));
            }
        }
        kv.push(("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(self.add_bos)));
        kv.push(("tokenizer.ggml.add_eos_token".to_string(), Value::Bool(self.add_eos)));
        if let Some(template) = &self.chat_template {
            kv.push(("tokenizer.chat_template".to_string(), s(template)));
        }
        kv
    }

    fn token(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|id| self.tokens.get(id as usize)).map(String::as_str)
    }

    /// transformers' `tokenizer.json`.
    pub fn to_tokenizer_json(&self) -> Json {
        let split = pre_split(&self.pre).expect("checked when read");
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for (id, (token, &kind)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            if kind == UNUSED {
                continue;
            }
            vocab.entry(token.clone()).or_insert(json!(id));
            if kind == CONTROL || kind == USER_DEFINED {
                added.push(json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": kind == CONTROL,
                }));
            }
        }
        let mut single = Vec::new();
        let mut specials = Map::new();
        if let (true, Some(bos)) = (self.add_bos, self.token(self.bos)) {
            single.push(json!({"SpecialToken": {"id": bos, "type_id": 0}}));
            specials.insert(bos.into(), json!({"id": bos, "ids": [self.bos], "tokens": [bos]}));
        }
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        if let (true, Some(eos)) = (self.add_eos, self.token(self.eos)) {
            single.push(json!({"SpecialToken": {"id": eos, "type_id": 0}}));
            specials.insert(eos.into(), json!({"id": eos, "ids": [self.eos], "tokens": [eos]}));
        }
        let post_processor = if specials.is_empty() {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true})
        } else {
            let pair: Vec<Json> = single
                .iter()
                .cloned()
                .chain(single.iter().map(|p| {
                    let mut p = p.clone();
                    if let Some(seq) = p.get_mut("Sequence") {
                        *seq = json!({"id": "B", "type_id": 1});
                    }
                    p
                }))
                .collect();
            json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": split.pre_tokenizer(),
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": split == PreSplit::Llama3,
                "vocab": vocab, "merges": self.merges,
            }
        })
    }

    /// transformers' `tokenizer_config.json`; `max_length` is the model's context.
    pub fn to_tokenizer_config(&self, max_length: usize) -> Json {
        let mut decoder = Map::new();
        for (id, (token, &kind)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            if kind == CONTROL || kind == USER_DEFINED {
                decoder.insert(
                    id.to_string(),
                    json!({"content": token, "lstrip": false, "normalized": false, "rstrip": false,
                           "single_word": false, "special": kind == CONTROL}),
                );
            }
        }
        json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "bos_token": self.token(self.bos),
            "eos_token": self.token(self.eos),
            "unk_token": self.token(self.unk),
            "pad_token": self.token(self.pad),
            "added_tokens_decoder": decoder,
            "chat_template": self.chat_template,
            "model_max_length": max_length,
            "clean_up_tokenization_spaces": false,
        })
    }

    /// Read transformers' `tokenizer.json` and (optional) `tokenizer_config.json`;
    /// `vocab_size` pads the token list with unused `[PAD{id}]` tokens as
    /// llama.cpp's converter does. `path` is the tokenizer.json's, for errors.
    pub fn from_hf(
        path: &Path,
        tokenizer: &Json,
        config: Option<&Json>,
        vocab_size: usize,
    ) -> Result<Vocab, ConvertError> {
        let model = tokenizer.get("model").ok_or_else(|| ConvertError::missing(path, "no `model`"))?;
        let kind = model.get("type").and_then(Json::as_str).unwrap_or("?");
        if kind != "BPE" || model.get("byte_fallback").and_then(Json::as_bool) == Some(true) {
            return Err(ConvertError::unsupported(
                path,
                format!(
                    "tokenizer model `{kind}` (byte-fallback BPE / SentencePiece); supported: byte-level BPE"
                ),
            ));
        }
        let pre = tokenizer.get("pre_tokenizer").unwrap_or(&Json::Null);
        let pre_name = PreSplit::recognise(pre).ok_or_else(|| {
            ConvertError::unsupported(
                path,
                format!("pre-tokenizer {pre} (no llama.cpp `tokenizer.ggml.pre` matches it)"),
            )
        })?;
        let entries = model
            .get("vocab")
            .and_then(Json::as_object)
            .ok_or_else(|| ConvertError::missing(path, "no `model.vocab`"))?;
        let mut by_id: HashMap<usize, (String, i32)> = HashMap::new();
        for (token, id) in entries {
            let id = id.as_u64().ok_or_else(|| ConvertError::missing(path, format!("token {token:?} id")))?;
            by_id.insert(id as usize, (token.clone(), NORMAL));
        }
        for token in tokenizer.get("added_tokens").and_then(Json::as_array).into_iter().flatten() {
            let (Some(id), Some(content)) =
                (token.get("id").and_then(Json::as_u64), token.get("content").and_then(Json::as_str))
            else {
                return Err(ConvertError::missing(path, format!("added token {token} without id/content")));
            };
            let special = token.get("special").and_then(Json::as_bool).unwrap_or(false);
            by_id.insert(id as usize, (content.to_string(), if special { CONTROL } else { USER_DEFINED }));
        }
        let n = by_id.keys().max().map_or(0, |m| m + 1).max(vocab_size);
        let (mut tokens, mut token_types) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for id in 0..n {
            let (token, kind) = by_id.remove(&id).unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED));
            tokens.push(token);
            token_types.push(kind);
        }
        let merges = model
            .get("merges")
            .and_then(Json::as_array)
            .ok_or_else(|| ConvertError::missing(path, "no `model.merges`"))?
            .iter()
            .map(|m| match m {
                Json::String(s) => Ok(s.clone()),
                Json::Array(pair) if pair.len() == 2 => {
                    Ok(format!("{} {}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or("")))
                }
                other => Err(ConvertError::missing(path, format!("merge {other} is not `a b` or [a, b]"))),
            })
            .collect::<Result<Vec<_>, _>>()?;

        let lookup = |name: &str| -> Option<u32> {
            let value = config?.get(name)?;
            let text = value.as_str().or_else(|| value.get("content").and_then(Json::as_str))?;
            tokens.iter().position(|t| t == text).map(|id| id as u32)
        };
        let flag = |name: &str| config.and_then(|c| c.get(name)).and_then(Json::as_bool);
        // Without tokenizer_config.json, a template post-processor says whether
        // BOS is added.
        let template_adds_bos = tokenizer
            .pointer("/post_processor/single/0/SpecialToken")
            .is_some_and(|_| tokenizer.pointer("/post_processor/type") == Some(&json!("TemplateProcessing")));
        Ok(Vocab {
            model: "gpt2".into(),
            pre: pre_name.into(),
            bos: lookup("bos_token"),
            eos: lookup("eos_token"),
            unk: lookup("unk_token"),
            pad: lookup("pad_token"),
            add_bos: flag("add_bos_token").unwrap_or(template_adds_bos),
            add_eos: flag("add_eos_token").unwrap_or(false),
            chat_template: config
                .and_then(|c| c.get("chat_template"))
                .and_then(Json::as_str)
                .map(str::to_string),
            tokens,
            token_types,
            merges,
        })
    }

    /// A `tokenizers` tokenizer that splits text as llama.cpp does for this
    /// vocabulary.
    pub fn to_tokenizer(&self, path: &Path) -> Result<tokenizers::Tokenizer, ConvertError> {
        let json = self.to_tokenizer_json().to_string();
        json.parse::<tokenizers::Tokenizer>()
            .map_err(|e| ConvertError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vocab {
        let tokens = ["<|endoftext|>", "<|im_start|>", "a", "b", "ab", "Ġ", "Ġab", "1", "2"];
        Vocab {
            model: "gpt2".into(),
            pre: "smollm".into(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_types: vec![CONTROL, CONTROL, 1, 1, 1, 1, 1, 1, 1],
            merges: vec!["a b".into(), "Ġ ab".into()],
            bos: Some(1),
            eos: Some(0),
            unk: None,
            pad: None,
            add_bos: false,
            add_eos: false,
            chat_template: Some("{{ messages }}".into()),
        }
    }

    #[test]
    fn vocab_round_trips_through_tokenizer_json() {
        let v = tiny();
        let tok = v.to_tokenizer(Path::new("t")).unwrap();
        let ids = tok.encode("<|im_start|>ab ab12", false).unwrap().get_ids().to_vec();
        // Special token split out, merges applied, digits one by one.
        assert_eq!(ids, [1, 4, 6, 7, 8]);
        let back = Vocab::from_hf(
            Path::new("tokenizer.json"),
            &v.to_tokenizer_json(),
            Some(&v.to_tokenizer_config(2048)),
            9,
        )
        .unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn bos_is_added_when_the_vocab_says_so() {
        let mut v = tiny();
        v.add_bos = true;
        let tok = v.to_tokenizer(Path::new("t")).unwrap();
        assert_eq!(tok.encode("ab", true).unwrap().get_ids(), [1, 4]);
        let back = Vocab::from_hf(Path::new("t"), &v.to_tokenizer_json(), None, 9).unwrap();
        assert!(back.add_bos);
    }

    #[test]
    fn pre_tokenizers_map_back_to_their_llama_cpp_names() {
        for name in ["smollm", "gpt-2", "llama-bpe", "qwen2"] {
            let split = pre_split(name).unwrap();
            assert_eq!(PreSplit::recognise(&split.pre_tokenizer()), Some(name));
        }
        assert_eq!(PreSplit::recognise(&pre_split("starcoder").unwrap().pre_tokenizer()), Some("smollm"));
        assert_eq!(pre_split("default"), None, "llama.cpp's default is not GPT-2's regex");
    }

    #[test]
    fn unsupported_types_are_named() {
        let mut meta = HashMap::new();
        meta.insert("tokenizer.ggml.model".to_string(), Value::String("llama".into()));
        let e = Vocab::from_gguf(Path::new("m.gguf"), &meta).unwrap_err().to_string();
        assert!(e.contains("m.gguf") && e.contains("`llama`"), "{e}");
        meta.insert("tokenizer.ggml.model".to_string(), Value::String("gpt2".into()));
        meta.insert("tokenizer.ggml.pre".to_string(), Value::String("falcon".into()));
        let e = Vocab::from_gguf(Path::new("m.gguf"), &meta).unwrap_err().to_string();
        assert!(e.contains("`falcon`"), "{e}");
    }
}
