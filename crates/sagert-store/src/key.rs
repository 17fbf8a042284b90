//! Content-hash keys for model calls; the recipe is documented on [`cache_key`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use sagert_backend::{ChatRequest, ChatRole};

/// The version tag hashed into every key. Bump it when the recipe changes.
const KEY_VERSION: &str = "sagert-call-key/1";

/// The content hash of a call: 64 lowercase hex digits of SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallKey(pub String);

impl CallKey {
    /// The full hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits and an ellipsis, for messages and logs.
    pub fn short(&self) -> String {
        match self.0.get(..12) {
            Some(prefix) if self.0.len() > 12 => format!("{prefix}…"),
            _ => self.0.clone(),
        }
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is hashed. Field order here is the serialised order; do not reorder.
#[derive(Serialize)]
struct KeyMaterial<'a> {
    v: &'static str,
    model: &'a str,
    messages: Vec<MessageMaterial<'a>>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    seed: Option<u64>,
    n: u32,
    stop: &'a [String],
    schema: Option<SchemaMaterial<'a>>,
}

#[derive(Serialize)]
struct MessageMaterial<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct SchemaMaterial<'a> {
    name: &'a str,
    body: Value,
}

/// The key of a request to a model: the hex SHA-256 of a canonical JSON
/// serialisation of everything that determines the answer:
///
/// - the model id (as [`sagert_backend::ChatBackend::model_id`] gives it),
/// - the messages, in order, each as role and content,
/// - the sampling parameters: temperature, top_p, max_tokens, seed, n and the stop
///   strings (in the order given),
/// - the output schema's name and body, if any.
///
/// What is *not* in the key: the endpoint URL, the API key, timeouts, retry
/// settings. Moving a run to another endpoint that serves the same model keeps its
/// cache; changing the model (or any of the above) makes a new key.
///
/// Canonical means: a struct of our own with a fixed field order (so that a new
/// field in `sagert-backend`'s types does not silently change every key), object
/// keys inside the schema sorted recursively (explicitly, so that enabling
/// serde_json's `preserve_order` anywhere in the workspace cannot change keys), and
/// numbers written as serde_json writes them (`0.7_f32` as `0.7`). The material
/// starts with a version tag; a deliberate change of the recipe bumps it, which
/// makes every earlier cache entry a miss (never a wrong hit).
pub fn cache_key(model_id: &str, request: &ChatRequest) -> CallKey {
    let material = canonical_material(model_id, request);
    CallKey(hex::encode(Sha256::digest(material.as_bytes())))
}

/// The canonical JSON text that [`cache_key`] hashes.
pub(crate) fn canonical_material(model_id: &str, request: &ChatRequest) -> String {
    let p = &request.params;
    let material = KeyMaterial {
        v: KEY_VERSION,
        model: model_id,
        messages: request
            .messages
            .iter()
            .map(|m| MessageMaterial { role: role_name(m.role), content: &m.content })
            .collect(),
        temperature: p.temperature,
        top_p: p.top_p,
        max_tokens: p.max_tokens,
        seed: p.seed,
        n: p.n,
        stop: &p.stop,
        schema: request
            .schema
            .as_ref()
            .map(|s| SchemaMaterial { name: &s.name, body: sorted_value(&s.schema) }),
    };
    // Only strings, numbers, options and maps with string keys: serialising cannot fail.
    serde_json::to_string(&material).expect("call key material is always serialisable")
}

/// Our own names, so that a serde rename in `sagert-backend` does not change keys.
fn role_name(role: ChatRole) -> &'static str {
    match role {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    }
}

/// A copy of `value` whose objects are built in sorted key order, recursively.
///
/// With serde_json's default `BTreeMap` this changes nothing; with `preserve_order`
/// (an `IndexMap`) it is what makes the serialisation canonical.
fn sorted_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k.clone(), sorted_value(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagert_backend::{ChatMessage, JsonSchema};
    use serde_json::json;

    fn request() -> ChatRequest {
        let mut r =
            ChatRequest::new(vec![ChatMessage::system("Be brief."), ChatMessage::user("Name a colour.")]);
        r.params.temperature = Some(0.7);
        r.params.max_tokens = Some(64);
        r.params.seed = Some(42);
        r.schema = Some(JsonSchema {
            name: "colour".into(),
            schema: json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        });
        r
    }

    /// The golden text and digest. The digest was computed independently of this
    /// code, from the text: `printf '%s' "$TEXT" | sha256sum`.
    const GOLDEN_TEXT: &str = concat!(
        r#"{"v":"sagert-call-key/1","model":"gpt-4o-mini","#,
        r#""messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Name a colour."}],"#,
        r#""temperature":0.7,"top_p":null,"max_tokens":64,"seed":42,"n":1,"stop":[],"#,
        r#""schema":{"name":"colour","body":{"properties":{"name":{"type":"string"}},"required":["name"],"type":"object"}}}"#
    );
    const GOLDEN_HEX: &str = "f70af33007bb61c37409206595002f00e67f0f78db4ede66ce6b9dbdfffaf4f5";

    #[test]
    fn canonical_text_and_digest_are_golden() {
        assert_eq!(canonical_material("gpt-4o-mini", &request()), GOLDEN_TEXT);
        assert_eq!(cache_key("gpt-4o-mini", &request()).as_str(), GOLDEN_HEX);
    }

    #[test]
    fn schema_objects_are_sorted_recursively() {
        let v: Value = serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":2,"x":3}]},"a":0}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&sorted_value(&v)).unwrap(),
            r#"{"a":0,"b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn short_key_is_a_prefix() {
        let k = cache_key("m", &request());
        assert_eq!(k.as_str().len(), 64);
        assert!(k.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(k.short(), format!("{}…", &k.as_str()[..12]));
        assert_eq!(CallKey("abc".into()).short(), "abc");
    }
}
