//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`),
//! rendered with minijinja the way Hugging Face's `apply_chat_template` does.
//!
//! The environment matches transformers': `trim_blocks` and `lstrip_blocks` on,
//! loop controls (`break`, `continue`), Python string and dict methods
//! (`.strip()`, `.startswith()`, `.items()`, ... through minijinja-contrib's
//! pycompat), `tojson`, and the two globals that templates call:
//! `raise_exception(message)` (the render fails with that message) and
//! `strftime_now(format)` (the current UTC date and time). The context holds
//! `messages` (a list of `{role, content}`), `add_generation_prompt`,
//! `bos_token` and `eos_token`.

use minijinja::value::Serde;
use minijinja::{context, Environment, ErrorKind};
use sagert_backend::ChatMessage;

use crate::error::LlamaError;

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template and the special-token strings it is given.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compile `source` (the Jinja text) with the model's BOS and EOS token texts.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, LlamaError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| compile_error(&e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", |format: String| strftime(&format, now_unix()));
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(|e| compile_error(&e))?;
        Ok(ChatTemplate { env, bos_token: bos_token.to_string(), eos_token: eos_token.to_string() })
    }

    /// Render `messages`, ending with the opening of the assistant's turn when
    /// `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, LlamaError> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| render_error(&e))?;
        template
            .render(context! {
                messages => Serde(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|e| render_error(&e))
    }

    /// The BOS token's text, as the template sees it.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }
}

fn compile_error(e: &minijinja::Error) -> LlamaError {
    LlamaError::Template { stage: "compile", message: describe(e) }
}

fn render_error(e: &minijinja::Error) -> LlamaError {
    LlamaError::Template { stage: "render", message: describe(e) }
}

/// The error with its detail, line and causes on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Python's `strftime` for a UTC time, for the specifiers chat templates use:
/// `%Y %y %m %d %e %B %b %A %a %H %M %S %j %%`. Others are an error.
fn strftime(format: &str, unix: i64) -> Result<String, minijinja::Error> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month_name = MONTHS[(month - 1) as usize];
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('%') => out.push('%'),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported specifier %{}",
                        other.map_or(String::new(), String::from)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template, as its GGUF carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_renders_chatml() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let text = t.render(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let text = t.render(&[ChatMessage::user("Hi")], false).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn whitespace_control_matches_transformers() {
        // trim_blocks drops the newline after a block tag; lstrip_blocks drops the
        // indentation before one.
        let source = "{% for m in messages %}\n    {{ m.role }}:{{ m.content | trim }}|\n{% endfor %}";
        let t = ChatTemplate::new(source, "", "").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user(" a "), ChatMessage::assistant("b")], false).unwrap(),
            "    user:a|\n    assistant:b|\n"
        );
    }

    #[test]
    fn python_methods_globals_and_loop_controls_work() {
        let source = "{{ bos_token }}{% for m in messages %}{% if m.content.startswith('skip') %}{% continue %}{% endif %}{{ m.content.strip().upper() }}{% endfor %}{{ eos_token }}{{ messages | tojson }}";
        let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let text = t.render(&[ChatMessage::user(" hi "), ChatMessage::user("skip me")], false).unwrap();
        assert!(text.starts_with("<s>HI</s>["), "{text}");
        // Python json.dumps separators, as transformers' tojson writes them.
        assert!(text.contains(r#"{"role": "user", "content": " hi "}"#), "{text}");
    }

    #[test]
    fn raise_exception_fails_the_render_with_its_message() {
        let source = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok";
        let t = ChatTemplate::new(source, "", "").unwrap();
        assert_eq!(t.render(&[ChatMessage::user("x")], true).unwrap(), "ok");
        let e = t.render(&[ChatMessage::system("x")], true).unwrap_err();
        assert!(
            matches!(&e, LlamaError::Template { stage: "render", message } if message.contains("System role not supported")),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_are_compile_errors() {
        let e = ChatTemplate::new("{% for %}", "", "").unwrap_err();
        assert!(matches!(e, LlamaError::Template { stage: "compile", .. }), "{e}");
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(strftime("%d %b %Y", t).unwrap(), "29 Feb 2024");
        assert_eq!(
            strftime("%A %B %e, %y %H:%M:%S %j %%", t).unwrap(),
            "Thursday February 29, 24 13:05:09 060 %"
        );
        assert_eq!(strftime("%Y-%m-%d %a", 0).unwrap(), "1970-01-01 Thu");
        assert!(strftime("%Q", t).is_err());
        for days in [-1000, 0, 59, 60, 10_000, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn strftime_now_is_callable() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        let year: i64 = t.render(&[], false).unwrap().parse().unwrap();
        assert!(year >= 2024);
    }
}
