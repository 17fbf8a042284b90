//! Constrained decoding: a JSON schema becomes a mask over the vocabulary at
//! every step, so the sampler can only pick tokens that keep the output a
//! prefix of a JSON text valid under the schema. The grammar engine is
//! [llguidance](https://github.com/guidance-ai/llguidance) (an Earley parser
//! over a lazily built lexer, walked against a trie of the token bytes).
//!
//! # How the engine drives it
//!
//! [`Grammars`] is built once per loaded model (it holds the token trie and the
//! parser factory; building it walks the whole vocabulary, ~0.1 s for 49k
//! tokens) and is shared by every request through an `Arc`. Each generated
//! choice with a schema gets its own [`Matcher`] from [`Grammars::json_schema`];
//! an invalid schema fails there, before any decoding, with
//! [`LlamaError::Invalid`]. Then, for every token of that choice:
//!
//! 1. take the logits row of the choice (one entry per vocabulary token);
//! 2. [`Matcher::mask_logits`]: every token the grammar forbids now gets
//!    `f32::NEG_INFINITY` (the [`crate::sampler::Sampler`] never draws those,
//!    greedy or tempered);
//! 3. sample as usual;
//! 4. if the token is an end-of-generation token (`vocab.is_eog`), finish the
//!    choice with [`sagert_backend::FinishReason::Stop`] (the mask only allows
//!    one once the JSON is complete); calling [`Matcher::consume`] with it is
//!    allowed but not needed;
//! 5. otherwise [`Matcher::consume`] the token, then, if
//!    [`Matcher::is_finished`], finish the choice with `Stop` without sampling
//!    again (the grammar allows nothing but end of generation there; the end
//!    token itself is then not part of the output).
//!
//! `max_tokens` still applies: a choice cut short ends with `Length` and its
//! text is an unfinished JSON prefix, as with the HTTP backends. An error from
//! `mask_logits` or `consume` means the matcher and the sampled token disagree
//! (a bug, or logits from another model): fail that choice with the error.
//! The masks assume that the choice's text is exactly what was consumed: do not
//! inject tokens (a prefilled assistant turn) without consuming them.
//!
//! # Tokens
//!
//! The trie holds each token's bytes as llama.cpp renders them without special
//! tokens (`token_to_piece(special = false)`). Control and end-of-generation
//! tokens are stored as llguidance *special* tokens (a `0xFF` byte, which no
//! UTF-8 text contains, then the token's text), so a JSON grammar never allows
//! them, except the end-of-generation tokens: all of `is_eog`'s tokens
//! (SmolLM2: `<|im_end|>`, which is its `eos`, then `<|endoftext|>` and
//! `<reponame>`, the engine's stop set too) are llguidance's EOS set, allowed
//! whenever the JSON is complete.
//!
//! When the grammar forces bytes (the rest of a property name, `":"`), llguidance
//! forces their *canonical* tokenization, one token per step, so the model sees
//! the tokens its tokenizer would have produced; that tokenization is llama.cpp's
//! own (`llama_tokenize` on the shared model, which is safe from any thread).
//! Where llama.cpp's tokens do not spell the bytes back (a tokenizer that adds a
//! leading space, bytes that are not UTF-8) the trie's greedy tokenization is
//! used instead.
//!
//! # JSON style
//!
//! Output is JSON with at most [`MAX_WHITESPACE`] whitespace characters between
//! two tokens of JSON (llguidance's default allows unbounded runs, on which small
//! models can loop until `max_tokens`) and none after the closing bracket of the
//! top-level value, where [`Matcher::is_finished`] becomes true. A step where
//! the grammar forces one token still costs a forward pass: llguidance's
//! fast-forward tokens are not used. A schema may set its own layout with
//! llguidance's `x-guidance` key (its `JsonCompileOptions`), which then wins.
//! Only local references (`"$ref": "#/..."`) are supported.

use std::sync::Arc;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::{StopReason, TopLevelGrammar};
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{JsonCompileOptions, ParserFactory};
use serde_json::Value;

use crate::LlamaError;

/// The most whitespace characters allowed between two tokens of JSON.
pub const MAX_WHITESPACE: usize = 16;

/// The byte that starts a special token in llguidance's trie.
const SPECIAL: u8 = TokTrie::SPECIAL_TOKEN_MARKER;

/// Built once per loaded model: the token trie, the tokenizer llguidance forces
/// bytes with, and llguidance's parser factory. `Send + Sync`; share it with an
/// `Arc`.
pub struct Grammars {
    factory: ParserFactory,
    vocab_size: usize,
    eos_tokens: Arc<[u32]>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("vocab_size", &self.vocab_size)
            .field("eos_tokens", &self.eos_tokens)
            .finish()
    }
}

impl Grammars {
    /// The grammars of `model`: reads its whole vocabulary (each token's bytes,
    /// which tokens are control and end-of-generation tokens) and keeps the
    /// model for canonical tokenization.
    pub fn new(model: Arc<LlamaModel>) -> Result<Grammars, LlamaError> {
        let env = LlamaTokEnv::new(model)?;
        let vocab_size = env.trie.vocab_size();
        let env: TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| {
            LlamaError::Invalid(format!("building the token trie for constrained decoding: {e}"))
        })?;
        // Warnings and errors come back through our own results, not stderr.
        factory.quiet();
        let eos_tokens = factory.tok_env().tok_trie().eos_tokens().into();
        Ok(Grammars { factory, vocab_size, eos_tokens })
    }

    /// Tokens in the vocabulary the masks cover.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The end-of-generation tokens the grammar allows once its JSON is complete.
    pub fn eos_tokens(&self) -> &[u32] {
        &self.eos_tokens
    }

    /// The bytes of `token` as the masks see them: its text for a normal token,
    /// `0xFF` and its text for a control or end-of-generation token, nothing
    /// for a token outside the vocabulary.
    pub fn token_bytes(&self, token: u32) -> &[u8] {
        self.factory.tok_env().tok_trie().token(token)
    }

    /// A matcher for one generated choice constrained to `schema` (a JSON
    /// Schema, as [`sagert_backend::JsonSchema::schema`] carries it; `true` is
    /// any JSON). Compiles the schema; a schema that is not an object, uses what
    /// llguidance does not support, or that no value satisfies is
    /// [`LlamaError::Invalid`] with llguidance's reason.
    pub fn json_schema(&self, schema: &Value) -> Result<Matcher, LlamaError> {
        let invalid =
            |why: String| LlamaError::Invalid(format!("json schema for constrained decoding: {why}"));
        let mut schema = match schema {
            Value::Object(_) => schema.clone(),
            Value::Bool(true) => Value::Object(Default::default()),
            Value::Bool(false) => return Err(invalid("`false` admits no value".into())),
            other => return Err(invalid(format!("must be a JSON object or `true`, got `{other}`"))),
        };
        if schema.get("x-guidance").is_none() {
            let options = JsonCompileOptions {
                whitespace_pattern: Some(format!(r"[\x20\x0A\x0D\x09]{{1,{MAX_WHITESPACE}}}")),
                ..JsonCompileOptions::default()
            };
            options.apply_to(&mut schema);
        }
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(schema))
            .map_err(|e| invalid(format!("{e:#}")))?;
        let inner = llguidance::Matcher::new(Ok(parser));
        if let Some(e) = inner.get_error() {
            return Err(invalid(e));
        }
        Ok(Matcher { inner, vocab_size: self.vocab_size, eos_tokens: Arc::clone(&self.eos_tokens) })
    }
}

/// The grammar state of one generated choice; see the [module docs](self) for
/// the order of calls. `Send`: it moves with its choice.
pub struct Matcher {
    inner: llguidance::Matcher,
    vocab_size: usize,
    eos_tokens: Arc<[u32]>,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("stop_reason", &self.inner.stop_reason())
            .field("error", &self.inner.get_error())
            .finish()
    }
}

impl Matcher {
    /// Set the logit of every token the grammar forbids now to
    /// `f32::NEG_INFINITY`. `logits` has one entry per vocabulary token; entries
    /// past the vocabulary (padding rows some models have) are forbidden too.
    /// Once the JSON is complete only the end-of-generation tokens stay.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), LlamaError> {
        if logits.len() < self.vocab_size {
            return Err(LlamaError::Invalid(format!(
                "constrained decoding: {} logits for a vocabulary of {} tokens",
                logits.len(),
                self.vocab_size
            )));
        }
        let mask = self.inner.compute_mask_or_eos().map_err(|e| constraint_error("computing the mask", e))?;
        mask.iter_unset_entries(|i| logits[i] = f32::NEG_INFINITY);
        logits[self.vocab_size..].fill(f32::NEG_INFINITY);
        Ok(())
    }

    /// Advance by a sampled token. A token the last mask forbade is an error,
    /// and so is any token after the matcher has finished, except an
    /// end-of-generation token (which changes nothing then).
    pub fn consume(&mut self, token: u32) -> Result<(), LlamaError> {
        if self.is_finished() && self.eos_tokens.contains(&token) {
            return Ok(());
        }
        if token as usize >= self.vocab_size {
            return Err(LlamaError::Invalid(format!(
                "constrained decoding: token {token} outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        self.inner.consume_token(token).map_err(|e| constraint_error(&format!("consuming token {token}"), e))
    }

    /// The grammar has matched completely and allows only end of generation:
    /// the engine finishes the choice with `Stop` (also true after an allowed
    /// end-of-generation token was consumed).
    pub fn is_finished(&self) -> bool {
        matches!(self.inner.stop_reason(), StopReason::NoExtension | StopReason::EndOfSentence)
    }

    /// Whether the text so far is a complete value, so that end of generation
    /// is allowed now (more may still follow, such as digits or whitespace).
    pub fn is_accepting(&mut self) -> bool {
        self.is_finished() || self.inner.is_accepting().unwrap_or(false)
    }
}

fn constraint_error(what: &str, e: impl std::fmt::Display) -> LlamaError {
    LlamaError::Constraint(format!("{what}: {e}"))
}

/// llguidance's view of the llama.cpp vocabulary: the trie of token bytes and
/// llama.cpp's tokenizer for forced bytes.
struct LlamaTokEnv {
    model: Arc<LlamaModel>,
    trie: TokTrie,
}

impl LlamaTokEnv {
    fn new(model: Arc<LlamaModel>) -> Result<LlamaTokEnv, LlamaError> {
        let vocab = model.vocab();
        let n = usize::try_from(vocab.n_tokens()).unwrap_or(0);
        if n == 0 {
            return Err(LlamaError::Invalid(
                "constrained decoding: the model has an empty vocabulary".into(),
            ));
        }
        let mut words = Vec::with_capacity(n);
        let mut eos = Vec::new();
        for id in 0..n as i32 {
            let token = LlamaToken(id);
            let eog = vocab.is_eog(token);
            if eog {
                eos.push(id as TokenId);
            }
            let word = if eog || vocab.is_control(token) {
                let mut word = vec![SPECIAL];
                vocab.token_to_piece_into(token, &mut word, true, None);
                if word.len() == 1 {
                    word.extend_from_slice(format!("<[{id}]>").as_bytes());
                }
                word
            } else {
                vocab.token_to_piece(token, false, None)
            };
            words.push(word);
        }
        let main_eos = vocab.eos();
        // The model's own EOS first: llguidance's `eos_token` is the first of the set.
        if let Some(pos) = eos.iter().position(|&t| t as i32 == main_eos.0) {
            eos.swap(0, pos);
        }
        if eos.is_empty() {
            return Err(LlamaError::Invalid(
                "constrained decoding: the model has no end-of-generation token".into(),
            ));
        }
        let info = TokRxInfo {
            tok_bos: u32::try_from(vocab.bos().0).ok().filter(|&t| (t as usize) < n),
            ..TokRxInfo::new(n as u32, eos[0])
        };
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eos);
        Ok(LlamaTokEnv { model, trie })
    }
}

impl TokenizerEnv for LlamaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// llama.cpp's tokenization of `bytes` (no special tokens parsed, none
    /// added), checked to spell `bytes` back; else the trie's greedy one.
    fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<TokenId> {
        let text_len = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            Err(e) => e.valid_up_to(),
        };
        let (text, rest) = bytes.split_at(text_len);
        let mut tokens: Vec<TokenId> = if text.is_empty() {
            Vec::new()
        } else {
            self.model.vocab().tokenize(text, false, false).into_iter().map(|t| t.0 as TokenId).collect()
        };
        let spells_text = tokens.iter().all(|&t| (t as usize) < self.trie.vocab_size())
            && self.trie.decode_raw(&tokens) == text;
        if !spells_text {
            tokens = self.trie.greedy_tokenize(text);
        }
        tokens.extend(self.trie.greedy_tokenize(rest));
        tokens
    }
}
