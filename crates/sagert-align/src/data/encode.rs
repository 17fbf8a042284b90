//! Rendering pairs with the model's chat template and tokenizing them.
//!
//! For a pair, the prompt text is the template rendered over the prompt's
//! messages with the generation prompt (the opening of the assistant's turn);
//! each completion's text is what the full conversation (prompt and response,
//! no generation prompt) adds after it. Prompt and completions are tokenized
//! separately, without the tokenizer's special-token post-processing, so the
//! token boundary falls exactly where the completion starts.
//!
//! # One EOS per completion
//!
//! Templates end an assistant turn with the EOS text, often followed by a
//! newline (SmolLM2: `<|im_end|>\n`). A completion whose text, trailing
//! whitespace removed, ends with the EOS text keeps its tokens up to and
//! including that EOS and drops what follows: generation stops at EOS, so the
//! model never produces, and should not be scored on, the whitespace after it.
//! A completion that does not end with the EOS text gets the EOS id appended.
//! Either way it ends with exactly one EOS (TRL's conversational path appended a
//! second one after the template's own). Multi-turn responses keep the EOS
//! tokens that close their earlier turns.
//!
//! # BOS
//!
//! The template usually writes the BOS text itself when the model wants one.
//! The BOS id is prepended only when `tokenizer_config.json` says
//! `add_bos_token: true` and the rendered prompt does not already begin with
//! the BOS text, so a sequence never starts with two.

use std::fmt;
use std::path::{Path, PathBuf};

use sagert_backend::ChatMessage;
use sagert_llama::template::ChatTemplate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::{Encoded, PreferencePair};
use crate::error::{AlignError, Result};

/// How long a pair's token sequences may be, and the rule that cuts them.
///
/// The rule is TRL's DPO trainer's before v0.12 (`truncation_mode =
/// "keep_end"`): when the prompt and the longer of the two completions
/// together exceed `max_length` tokens, the prompt is cut to its last
/// `max_prompt_length` tokens; when that is still too long, both completions
/// are cut to their first `max_length - len(prompt)` tokens. Two small
/// departures: TRL cut completions to `max_length - max_prompt_length` even
/// when the prompt was shorter (wasting the difference), and a BOS that
/// `add_bos_token` prepended stays first when the prompt is cut (the prompt
/// keeps BOS and its last `max_prompt_length - 1` tokens). A cut completion
/// loses its EOS, as in TRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Truncation {
    /// Keep at most this many prompt tokens when the pair is too long (default 512).
    pub max_prompt_length: usize,
    /// Prompt plus the longer completion at most this many tokens (default 1024).
    pub max_length: usize,
}

impl Default for Truncation {
    fn default() -> Self {
        Truncation { max_prompt_length: 512, max_length: 1024 }
    }
}

impl Truncation {
    /// Check that the limits leave room for a completion:
    /// `max_prompt_length < max_length`.
    pub fn check(&self) -> Result<()> {
        if self.max_prompt_length >= self.max_length {
            return Err(AlignError::Config {
                file: PathBuf::from("[data]"),
                message: format!(
                    "max_prompt_length ({}) must be below max_length ({})",
                    self.max_prompt_length, self.max_length
                ),
            });
        }
        Ok(())
    }

    /// Apply the rule to one pair's tokens; `keep_first` keeps the prompt's first
    /// token (a prepended BOS) when the prompt is cut. Returns whether anything
    /// was cut. The limits must have passed [`Truncation::check`].
    fn apply(
        &self,
        prompt: &mut Vec<u32>,
        chosen: &mut Vec<u32>,
        rejected: &mut Vec<u32>,
        keep_first: bool,
    ) -> bool {
        let longer = chosen.len().max(rejected.len());
        let mut truncated = false;
        if prompt.len() + longer > self.max_length && prompt.len() > self.max_prompt_length {
            let keep_first = keep_first && self.max_prompt_length > 0;
            let tail = self.max_prompt_length - usize::from(keep_first);
            let start = prompt.len() - tail;
            if keep_first {
                prompt.drain(1..start);
            } else {
                prompt.drain(..start);
            }
            truncated = true;
        }
        if prompt.len() + longer > self.max_length {
            let room = self.max_length.saturating_sub(prompt.len());
            chosen.truncate(room);
            rejected.truncate(room);
            truncated = true;
        }
        truncated
    }
}

/// A model's chat template and tokenizer, turning [`PreferencePair`]s into
/// [`Encoded`] token sequences.
pub struct Encoder {
    dir: PathBuf,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// The BOS text and id, when the model has a BOS token in its vocabulary.
    bos: Option<(String, u32)>,
    add_bos: bool,
    eos_text: String,
    eos_id: u32,
    pad_id: u32,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("dir", &self.dir)
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("eos", &(&self.eos_text, self.eos_id))
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// The encoder of a transformers model directory (as
    /// `sagert_convert::gguf_to_hf` writes it): `tokenizer.json`, and from
    /// `tokenizer_config.json` the `chat_template` (or a `chat_template.jinja`
    /// beside it), `bos_token`, `eos_token`, `pad_token` (strings or
    /// `{content: ..}` objects) and `add_bos_token` (default false).
    ///
    /// Errors when the directory has no chat template or no EOS token in its
    /// vocabulary.
    pub fn from_model_dir(dir: &Path) -> Result<Encoder> {
        let model_error =
            |path: &Path, message: String| AlignError::Model { path: path.to_path_buf(), message };
        if !dir.is_dir() {
            return Err(model_error(dir, "not a directory (expected a transformers model directory)".into()));
        }
        let mut tokenizer = sagert_convert::load_tokenizer(dir)?;
        // A tokenizer.json may configure truncation or padding; we do both ourselves.
        tokenizer.with_truncation(None).map_err(|e| AlignError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);

        let config_path = dir.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&config_path).map_err(AlignError::io(&config_path))?;
        let config: Value =
            serde_json::from_str(&text).map_err(|e| model_error(&config_path, format!("not JSON: {e}")))?;
        let source = chat_template(dir, &config_path, &config)?;
        let token = |key: &str| special_token(&config, key).map_err(|m| model_error(&config_path, m));

        let eos_text = token("eos_token")?.ok_or_else(|| {
            model_error(&config_path, "no `eos_token`: completions could not be ended".into())
        })?;
        let eos_id = tokenizer.token_to_id(&eos_text).ok_or_else(|| {
            model_error(&config_path, format!("eos_token `{eos_text}` is not in tokenizer.json's vocabulary"))
        })?;
        let add_bos = match config.get("add_bos_token") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(model_error(&config_path, format!("add_bos_token: {other} is not a boolean")))
            }
        };
        let bos_text = token("bos_token")?;
        let bos = match &bos_text {
            Some(text) => match tokenizer.token_to_id(text) {
                Some(id) => Some((text.clone(), id)),
                None if add_bos => {
                    return Err(model_error(
                        &config_path,
                        format!(
                        "add_bos_token is set but bos_token `{text}` is not in tokenizer.json's vocabulary"
                    ),
                    ))
                }
                None => None,
            },
            None if add_bos => {
                return Err(model_error(
                    &config_path,
                    "add_bos_token is set but there is no `bos_token`".into(),
                ))
            }
            None => None,
        };
        let pad_id = token("pad_token")?.and_then(|t| tokenizer.token_to_id(&t)).unwrap_or(eos_id);
        let template = ChatTemplate::new(&source, bos_text.as_deref().unwrap_or(""), &eos_text)
            .map_err(|e| AlignError::Template(format!("{}: {e}", dir.display())))?;
        Ok(Encoder { dir: dir.to_path_buf(), tokenizer, template, bos, add_bos, eos_text, eos_id, pad_id })
    }

    /// The EOS token's id.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The padding id: `pad_token`'s when the model has one, else EOS's.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The tokenizer (with its own truncation and padding turned off).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The tokens of `prompt` rendered for generation: the template with the
    /// generation prompt, and BOS as [`Encoder::encode`] gives it.
    pub fn render_prompt(&self, prompt: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.render(prompt, true).map_err(|e| AlignError::Template(format!("prompt: {e}")))?;
        self.prompt_ids(&text)
    }

    /// Render, tokenize and truncate one pair (see the module docs and
    /// [`Truncation`]).
    pub fn encode(&self, pair: &PreferencePair, limits: &Truncation) -> Result<Encoded> {
        limits.check()?;
        let in_pair = |e: String| AlignError::Template(format!("pair `{}`: {e}", pair.id));
        let prompt_text = self.render(&pair.prompt, true).map_err(in_pair)?;
        let mut prompt = self.prompt_ids(&prompt_text)?;
        let mut chosen = self.completion(pair, &prompt_text, &pair.chosen, "chosen")?;
        let mut rejected = self.completion(pair, &prompt_text, &pair.rejected, "rejected")?;
        let keep_first = self.add_bos && self.bos.as_ref().is_some_and(|(_, id)| prompt.first() == Some(id));
        let truncated = limits.apply(&mut prompt, &mut chosen, &mut rejected, keep_first);
        Ok(Encoded {
            id: pair.id.clone(),
            category: pair.category.clone(),
            prompt,
            chosen,
            rejected,
            ref_chosen_logps: pair.ref_chosen_logps,
            ref_rejected_logps: pair.ref_rejected_logps,
            truncated,
        })
    }

    fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, String> {
        self.template.render(messages, add_generation_prompt).map_err(|e| match e {
            sagert_llama::LlamaError::Template { stage, message } => format!("{stage} failed: {message}"),
            other => other.to_string(),
        })
    }

    /// The prompt text's tokens, with BOS prepended where the model asks for it
    /// and the text lacks it.
    fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.ids(text)?;
        if let Some((bos_text, bos_id)) = &self.bos {
            if self.add_bos && !text.starts_with(bos_text.as_str()) {
                ids.insert(0, *bos_id);
            }
        }
        Ok(ids)
    }

    /// The tokens of one response: what the rendered conversation adds after the
    /// prompt, ending with exactly one EOS.
    fn completion(
        &self,
        pair: &PreferencePair,
        prompt_text: &str,
        side: &[ChatMessage],
        name: &str,
    ) -> Result<Vec<u32>> {
        let in_pair = |e: String| AlignError::Template(format!("pair `{}`: {name}: {e}", pair.id));
        let messages: Vec<ChatMessage> = pair.prompt.iter().chain(side).cloned().collect();
        let full = self.render(&messages, false).map_err(in_pair)?;
        let rest = full.strip_prefix(prompt_text).ok_or_else(|| {
            in_pair(
                "the rendered conversation does not start with the rendered prompt (the chat template \
                 rewrites earlier turns once a reply follows), so the completion cannot be cut off it"
                    .into(),
            )
        })?;
        let body = rest.trim_end().strip_suffix(self.eos_text.as_str()).unwrap_or(rest);
        let mut ids = self.ids(body)?;
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Tokenize `text` without the tokenizer's special-token post-processing.
    fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding =
            self.tokenizer.encode(text, false).map_err(|e| AlignError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// The chat template: `tokenizer_config.json`'s `chat_template` (a string, or a
/// list of `{name, template}` whose `default` is taken), else the file
/// `chat_template.jinja` that newer transformers write beside it.
fn chat_template(dir: &Path, config_path: &Path, config: &Value) -> Result<String> {
    let model_error = |message: String| AlignError::Model { path: config_path.to_path_buf(), message };
    match config.get("chat_template") {
        Some(Value::String(s)) if !s.trim().is_empty() => return Ok(s.clone()),
        Some(Value::Array(list)) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(name))?
                    .get("template")?
                    .as_str()
            };
            return named("default").map(str::to_string).ok_or_else(|| {
                model_error("chat_template is a list of named templates without a `default` one".into())
            });
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => return Err(model_error(format!("chat_template: {other} is not a string"))),
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja).map_err(AlignError::io(&jinja));
    }
    Err(model_error(
        "no chat template (no `chat_template` here and no chat_template.jinja): pairs are always \
         rendered with the model's own template, so align an instruct/chat model, or add its template"
            .into(),
    ))
}

/// A special token's text: a string, or an object with `content` (transformers'
/// `AddedToken`); `None` when absent or null.
fn special_token(config: &Value, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(format!("{key}: an object without a string `content`")),
        },
        Some(other) => Err(format!("{key}: {other} is neither a string nor a {{content: ..}} object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(
        limits: Truncation,
        p: usize,
        c: usize,
        r: usize,
        keep_first: bool,
    ) -> (Vec<u32>, usize, usize, bool) {
        let mut prompt: Vec<u32> = (0..p as u32).collect();
        let (mut chosen, mut rejected) = (vec![7; c], vec![8; r]);
        let t = limits.apply(&mut prompt, &mut chosen, &mut rejected, keep_first);
        (prompt, chosen.len(), rejected.len(), t)
    }

    #[test]
    fn truncation_follows_the_classic_rule() {
        let l = Truncation { max_prompt_length: 4, max_length: 10 };
        // Fits: nothing cut, even with a prompt over max_prompt_length.
        assert_eq!(cut(l, 6, 4, 2, false), ((0..6).collect(), 4, 2, false));
        // Too long: the prompt keeps its last 4 tokens, which is enough.
        assert_eq!(cut(l, 8, 5, 3, false), (vec![4, 5, 6, 7], 5, 3, true));
        // Still too long: completions cut to 10 - 4 = 6.
        assert_eq!(cut(l, 8, 9, 3, false), (vec![4, 5, 6, 7], 6, 3, true));
        // A short prompt is not cut; completions get 10 - 3 = 7.
        assert_eq!(cut(l, 3, 12, 9, false), (vec![0, 1, 2], 7, 7, true));
        // A prepended BOS stays first.
        assert_eq!(cut(l, 8, 5, 3, true), (vec![0, 5, 6, 7], 5, 3, true));
    }

    #[test]
    fn limits_must_leave_room_for_a_completion() {
        assert!(Truncation::default().check().is_ok());
        let e = Truncation { max_prompt_length: 8, max_length: 8 }.check().unwrap_err().to_string();
        assert!(e.contains("max_prompt_length (8) must be below max_length (8)"), "{e}");
        let t: Truncation = toml::from_str("max_length = 64").unwrap();
        assert_eq!(t, Truncation { max_prompt_length: 512, max_length: 64 });
        let e = toml::from_str::<Truncation>("max_len = 64").unwrap_err().to_string();
        assert!(e.contains("max_len"), "{e}");
    }

    #[test]
    fn special_tokens_are_strings_or_objects() {
        let c: Value = serde_json::json!({"a": "<s>", "b": {"content": "</s>", "special": true}, "c": null});
        assert_eq!(special_token(&c, "a"), Ok(Some("<s>".into())));
        assert_eq!(special_token(&c, "b"), Ok(Some("</s>".into())));
        assert_eq!(special_token(&c, "c"), Ok(None));
        assert_eq!(special_token(&c, "d"), Ok(None));
        assert!(special_token(&serde_json::json!({"a": 3}), "a").is_err());
    }
}
