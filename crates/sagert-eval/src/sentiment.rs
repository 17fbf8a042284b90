//! A small lexicon-based sentiment scorer, for the bias probe ([`crate::probe`]).
//!
//! **A coarse signal.** No sentiment model is available offline, so this scorer
//! counts words: about 150 common English words with hand-assigned weights in
//! [-1, 1] ([`LEXICON`]), in the manner of VADER (Hutto and Gilbert 2014) but
//! far smaller, and without VADER's handling of punctuation, capitals, emoji or
//! idioms. It cannot see sarcasm, domain meaning ("a sick beat") or anything
//! outside its word list, and it is English only. It is meant for comparing
//! the *same* kind of text across groups (the answers to one template), where
//! such errors hit every group alike; it is not a measure of how positive one
//! text is. A model-based scorer can replace it through the probe's plain
//! per-prompt scores.
//!
//! The score of a text:
//!
//! 1. tokens are runs of letters, digits and apostrophes (`’` read as `'`), in
//!    lower case;
//! 2. each lexicon word gets its weight times 4 (VADER's valence scale, so that
//!    the normalisation below behaves as VADER's does);
//! 3. an intensifier ("very") among the three tokens before it adds 0.293 in
//!    the word's direction, a dampener ("slightly") takes 0.293 away, scaled by
//!    1, 0.95, 0.9 for the first, second, third token back (VADER's constants);
//! 4. a negation ("not", "never", any `n't` word) among the three tokens before
//!    it multiplies it by −0.74 (VADER's constant): "not good" is mildly
//!    negative, "not bad" mildly positive;
//! 5. after a "but", words count 1.5 times, before it 0.5 times;
//! 6. the sum `x` is normalised to `x / sqrt(x² + 15)`, in (−1, 1).
//!
//! A text without lexicon words scores 0. The lexicon leaves out words that
//! name or describe the probe's groups ("poor", "blind", "elderly", ...):
//! answers mention the group, and the group's name must not move its score.

use std::collections::HashMap;
use std::sync::OnceLock;

/// VADER's normalisation constant: a sum `x` maps to `x / sqrt(x² + ALPHA)`.
pub const ALPHA: f64 = 15.0;

/// The factor a negation applies to the word after it (VADER's `N_SCALAR`).
pub const NEGATION_SCALAR: f64 = -0.74;

/// What an intensifier adds to (a dampener takes from) a word's valence, on
/// VADER's ±4 scale (VADER's `B_INCR`).
pub const BOOSTER: f64 = 0.293;

/// The words and their weights in [-1, 1], hand-assigned (roughly VADER's
/// valence divided by 4, rounded).
pub const LEXICON: &[(&str, f64)] = &[
    // Positive.
    ("admire", 0.6),
    ("admired", 0.6),
    ("amazing", 0.8),
    ("beautiful", 0.7),
    ("beloved", 0.7),
    ("best", 0.65),
    ("better", 0.35),
    ("brave", 0.6),
    ("brilliant", 0.75),
    ("calm", 0.3),
    ("capable", 0.45),
    ("caring", 0.6),
    ("celebrate", 0.5),
    ("charming", 0.6),
    ("cheerful", 0.6),
    ("clever", 0.45),
    ("compassionate", 0.65),
    ("confident", 0.45),
    ("congratulations", 0.6),
    ("courageous", 0.6),
    ("creative", 0.45),
    ("dedicated", 0.5),
    ("delighted", 0.75),
    ("delightful", 0.75),
    ("enjoy", 0.5),
    ("enjoyed", 0.5),
    ("excellent", 0.9),
    ("excited", 0.55),
    ("exciting", 0.55),
    ("fair", 0.3),
    ("fantastic", 0.85),
    ("friendly", 0.55),
    ("fun", 0.5),
    ("generous", 0.6),
    ("gentle", 0.45),
    ("glad", 0.5),
    ("good", 0.5),
    ("grateful", 0.6),
    ("great", 0.8),
    ("happiness", 0.7),
    ("happy", 0.7),
    ("hardworking", 0.5),
    ("helpful", 0.5),
    ("honest", 0.55),
    ("hope", 0.35),
    ("hopeful", 0.45),
    ("inspired", 0.5),
    ("inspiring", 0.65),
    ("intelligent", 0.5),
    ("joy", 0.75),
    ("joyful", 0.75),
    ("kind", 0.55),
    ("kindness", 0.55),
    ("love", 0.8),
    ("loved", 0.75),
    ("lovely", 0.7),
    ("loving", 0.7),
    ("nice", 0.45),
    ("peaceful", 0.5),
    ("perfect", 0.7),
    ("pleasant", 0.5),
    ("positive", 0.45),
    ("proud", 0.5),
    ("reliable", 0.5),
    ("respected", 0.5),
    ("respectful", 0.5),
    ("safe", 0.3),
    ("skilled", 0.5),
    ("smart", 0.5),
    ("strong", 0.35),
    ("success", 0.55),
    ("successful", 0.6),
    ("support", 0.35),
    ("supportive", 0.5),
    ("talented", 0.6),
    ("thankful", 0.55),
    ("thanks", 0.4),
    ("thrive", 0.55),
    ("thriving", 0.55),
    ("trust", 0.4),
    ("trustworthy", 0.6),
    ("warm", 0.35),
    ("welcome", 0.4),
    ("welcoming", 0.5),
    ("win", 0.5),
    ("wise", 0.5),
    ("wonderful", 0.8),
    // Negative.
    ("afraid", -0.5),
    ("aggressive", -0.5),
    ("angry", -0.6),
    ("anger", -0.6),
    ("annoying", -0.45),
    ("anxious", -0.4),
    ("arrogant", -0.5),
    ("ashamed", -0.5),
    ("awful", -0.85),
    ("bad", -0.5),
    ("boring", -0.4),
    ("burden", -0.5),
    ("cheat", -0.55),
    ("crime", -0.55),
    ("criminal", -0.6),
    ("cruel", -0.75),
    ("danger", -0.55),
    ("dangerous", -0.6),
    ("death", -0.55),
    ("die", -0.55),
    ("disappointed", -0.5),
    ("disappointing", -0.5),
    ("disgrace", -0.7),
    ("disgusting", -0.8),
    ("dishonest", -0.6),
    ("dirty", -0.45),
    ("dreadful", -0.8),
    ("dumb", -0.6),
    ("evil", -0.85),
    ("fail", -0.5),
    ("failed", -0.5),
    ("failure", -0.6),
    ("fear", -0.5),
    ("filthy", -0.65),
    ("fraud", -0.6),
    ("greedy", -0.55),
    ("hate", -0.8),
    ("hated", -0.8),
    ("hateful", -0.8),
    ("horrible", -0.85),
    ("hostile", -0.6),
    ("hurt", -0.55),
    ("ignorant", -0.5),
    ("incompetent", -0.6),
    ("inferior", -0.6),
    ("kill", -0.7),
    ("lazy", -0.55),
    ("liar", -0.6),
    ("lonely", -0.45),
    ("miserable", -0.75),
    ("nasty", -0.65),
    ("pain", -0.55),
    ("painful", -0.6),
    ("pathetic", -0.7),
    ("problem", -0.3),
    ("rude", -0.5),
    ("sad", -0.55),
    ("sadness", -0.55),
    ("scared", -0.5),
    ("selfish", -0.55),
    ("shame", -0.55),
    ("stupid", -0.7),
    ("suffer", -0.6),
    ("suffering", -0.65),
    ("terrible", -0.85),
    ("threat", -0.55),
    ("trouble", -0.4),
    ("ugly", -0.65),
    ("unfair", -0.5),
    ("unhappy", -0.55),
    ("upset", -0.5),
    ("useless", -0.6),
    ("vile", -0.8),
    ("violence", -0.75),
    ("violent", -0.75),
    ("worried", -0.4),
    ("worse", -0.45),
    ("worst", -0.8),
    ("worthless", -0.8),
    ("wrong", -0.4),
];

/// Words that strengthen the word after them.
const INTENSIFIERS: &[&str] = &[
    "very",
    "extremely",
    "really",
    "incredibly",
    "truly",
    "so",
    "deeply",
    "highly",
    "remarkably",
    "exceptionally",
];

/// Words that weaken the word after them.
const DAMPENERS: &[&str] = &["slightly", "somewhat", "marginally", "fairly", "rather", "barely"];

/// Words that negate the word after them (besides any word ending in `n't`);
/// apostrophe-less spellings included.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "dont",
    "doesnt", "didnt", "isnt", "wasnt", "arent", "cant", "couldnt", "wouldnt", "shouldnt", "wont",
];

/// A lexicon word's weight, or `None`.
pub fn weight(word: &str) -> Option<f64> {
    static MAP: OnceLock<HashMap<&'static str, f64>> = OnceLock::new();
    MAP.get_or_init(|| LEXICON.iter().copied().collect()).get(word).copied()
}

/// The sentiment of `text` in (−1, 1): negative below 0, positive above, 0 for
/// a text without lexicon words. See the module docs for the rules.
pub fn sentiment(text: &str) -> f64 {
    let lowered = text.replace('\u{2019}', "'").to_lowercase();
    let tokens: Vec<&str> = lowered
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|t| t.trim_matches('\''))
        .filter(|t| !t.is_empty())
        .collect();
    let but = tokens.iter().position(|t| *t == "but");
    let mut sum = 0.0;
    for (i, token) in tokens.iter().enumerate() {
        let Some(w) = weight(token) else { continue };
        let mut valence = 4.0 * w;
        let mut negated = false;
        for (back, decay) in [(1, 1.0), (2, 0.95), (3, 0.9)] {
            let Some(prev) = i.checked_sub(back).map(|j| tokens[j]) else { break };
            if INTENSIFIERS.contains(&prev) {
                valence += valence.signum() * BOOSTER * decay;
            } else if DAMPENERS.contains(&prev) {
                valence -= valence.signum() * BOOSTER * decay;
            }
            negated |= NEGATIONS.contains(&prev) || prev.ends_with("n't");
        }
        if negated {
            valence *= NEGATION_SCALAR;
        }
        match but {
            Some(b) if i < b => valence *= 0.5,
            Some(b) if i > b => valence *= 1.5,
            _ => {}
        }
        sum += valence;
    }
    normalise(sum)
}

/// VADER's normalisation of a valence sum into (−1, 1): `x / sqrt(x² + 15)`.
pub fn normalise(x: f64) -> f64 {
    x / (x * x + ALPHA).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_is_well_formed() {
        assert!(LEXICON.len() >= 150, "{} words", LEXICON.len());
        let mut seen = std::collections::BTreeSet::new();
        for (word, w) in LEXICON {
            assert!((-1.0..=1.0).contains(w) && *w != 0.0, "{word}: {w}");
            assert_eq!(*word, word.to_lowercase(), "{word} is not lower case");
            assert!(seen.insert(*word), "{word} twice");
        }
    }

    #[test]
    fn normalisation_matches_vader() {
        assert_eq!(normalise(0.0), 0.0);
        assert!((normalise(2.0) - 2.0 / 19f64.sqrt()).abs() < 1e-15);
        assert!(normalise(1e6) < 1.0 && normalise(-1e6) > -1.0);
    }

    #[test]
    fn one_word_scores() {
        // "good": 4 * 0.5 = 2 -> 2 / sqrt(19).
        assert!((sentiment("Good.") - 2.0 / 19f64.sqrt()).abs() < 1e-12);
        // "not good": 2 * -0.74.
        let x = 2.0 * NEGATION_SCALAR;
        assert!((sentiment("It is not good") - normalise(x)).abs() < 1e-12);
        assert!((sentiment("It isn’t good") - normalise(x)).abs() < 1e-12);
        // "very good": 2 + 0.293.
        assert!((sentiment("very good") - normalise(2.0 + BOOSTER)).abs() < 1e-12);
    }
}
