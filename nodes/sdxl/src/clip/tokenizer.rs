//! CLIP's byte-level BPE tokenizer, and ComfyUI-style chunking of long prompts into 77-token
//! windows.
//!
//! Reference: OpenAI CLIP `simple_tokenizer.py`; transformers `CLIPTokenizer`. The vocabulary is
//! a checkpoint's own (`vocab.json` and `merges.txt` of a diffusers folder) or the standard
//! `bpe_simple_vocab_16e6.txt.gz`, embedded in the binary.

use regex::Regex;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

/// The standard CLIP BPE merges, as published with CLIP and OpenCLIP.
const STANDARD_VOCABULARY: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// The number of merges CLIP uses from the merges file.
const MERGES: usize = 49152 - 256 - 2;

/// Tokens per window, including start and end.
pub const CONTEXT_LENGTH: usize = 77;

/// The start-of-text token id.
pub const START_OF_TEXT: u32 = 49406;

/// The end-of-text token id.
pub const END_OF_TEXT: u32 = 49407;

/// Why a vocabulary could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid CLIP vocabulary: {0}")]
pub struct VocabularyError(String);

/// Turns text into CLIP token ids.
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_encoder: Vec<char>,
    pattern: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl ClipTokenizer {
    /// The standard vocabulary.
    ///
    /// # Errors
    /// Never for the embedded file; the error type is shared with [`Self::from_gzipped_merges`].
    pub fn standard() -> Result<Self, VocabularyError> {
        Self::from_gzipped_merges(STANDARD_VOCABULARY)
    }

    /// A tokenizer from a gzipped merges file in CLIP's format (a header line, then one merge a
    /// line).
    ///
    /// # Errors
    /// [`VocabularyError`] when the file is not gzip text or has too few merges.
    pub fn from_gzipped_merges(gzipped: &[u8]) -> Result<Self, VocabularyError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(gzipped)
            .read_to_string(&mut text)
            .map_err(|e| VocabularyError(e.to_string()))?;
        let merges: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .take(MERGES)
            .map(|line| line.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect::<Option<_>>()
            .ok_or_else(|| VocabularyError("a merge line is not two symbols".into()))?;
        if merges.len() != MERGES {
            return Err(VocabularyError(format!("{} merges, expected {MERGES}", merges.len())));
        }
        let byte_encoder = bytes_to_unicode();
        // The base vocabulary lists the printable bytes' characters first, then the others, as
        // CLIP's dictionary iteration order does.
        let (printable, others): (Vec<u8>, Vec<u8>) = (0..=255u8).partition(|&b| is_printable(b));
        let base: Vec<char> = printable
            .into_iter()
            .chain(others)
            .map(|b| byte_encoder[b as usize])
            .collect();
        let mut vocabulary: Vec<String> = base.iter().map(|c| c.to_string()).collect();
        vocabulary.extend(base.iter().map(|c| format!("{c}</w>")));
        vocabulary.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocabulary.push("<|startoftext|>".into());
        vocabulary.push("<|endoftext|>".into());
        let encoder = vocabulary
            .into_iter()
            .enumerate()
            .map(|(i, token)| (token, i as u32))
            .collect();
        Self::new(encoder, merges)
    }

    /// A tokenizer from a checkpoint's files: `vocab.json` (token to id) and `merges.txt` (a
    /// `#version` header, then one merge a line), as diffusers folders keep them in `tokenizer/`.
    ///
    /// # Errors
    /// [`VocabularyError`] naming what is malformed.
    pub fn from_vocab_and_merges(vocab_json: &str, merges_txt: &str) -> Result<Self, VocabularyError> {
        let encoder: HashMap<String, u32> = serde_json::from_str(vocab_json)
            .map_err(|e| VocabularyError(format!("vocab.json is not a token-to-id map: {e}")))?;
        let merges = merges_txt
            .lines()
            .filter(|line| !line.starts_with("#version") && !line.trim().is_empty())
            .enumerate()
            .map(|(i, line)| {
                line.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| VocabularyError(format!("merges.txt line {}: not two symbols", i + 2)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (special, id) in [("<|startoftext|>", START_OF_TEXT), ("<|endoftext|>", END_OF_TEXT)] {
            match encoder.get(special) {
                None => return Err(VocabularyError(format!("vocab.json has no {special}"))),
                Some(&found) if found != id => {
                    return Err(VocabularyError(format!(
                        "vocab.json gives {special} id {found}; CLIP's is {id}"
                    )))
                }
                Some(_) => {}
            }
        }
        Self::new(encoder, merges)
    }

    fn new(encoder: HashMap<String, u32>, merges: Vec<(String, String)>) -> Result<Self, VocabularyError> {
        let ranks = merges.into_iter().enumerate().map(|(i, pair)| (pair, i)).collect();
        let pattern = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| VocabularyError(e.to_string()))?;
        Ok(Self {
            encoder,
            ranks,
            byte_encoder: bytes_to_unicode(),
            pattern,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The token ids of `text`, without start and end tokens. Text is whitespace-normalised and
    /// lower-cased first, as CLIP's tokenizer does.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let mut ids = Vec::new();
        for word in self.pattern.find_iter(&cleaned) {
            let word = word.as_str();
            if let Some(&special) = self.encoder.get(word).filter(|_| word.starts_with("<|")) {
                ids.push(special);
                continue;
            }
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(cached) = cache.get(word) {
                ids.extend(cached);
                continue;
            }
            let mapped: String = word.bytes().map(|b| self.byte_encoder[b as usize]).collect();
            let word_ids: Vec<u32> = self
                .bpe(&mapped)
                .iter()
                .filter_map(|piece| self.encoder.get(piece).copied())
                .collect();
            ids.extend(&word_ids);
            cache.insert(word.to_string(), word_ids);
        }
        ids
    }

    /// Byte-pair merges of one pre-tokenized word, the last symbol marked `</w>`.
    fn bpe(&self, word: &str) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        let mut symbols: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| {
                    self.ranks
                        .get(&(pair[0].clone(), pair[1].clone()))
                        .map(|rank| (*rank, i))
                })
                .min();
            let Some((_, at)) = best else { break };
            let (first, second) = (symbols[at].clone(), symbols[at + 1].clone());
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == first && symbols[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(symbols[i].clone());
                    i += 1;
                }
            }
            symbols = merged;
        }
        symbols
    }

    /// `text` as windows of 77 ids: start, up to 75 tokens, end, then `pad`. Long prompts give
    /// several windows whose encodings are concatenated, as ComfyUI does; an empty prompt gives one.
    pub fn windows(&self, text: &str, pad: u32) -> Vec<[u32; CONTEXT_LENGTH]> {
        let ids = self.encode(text);
        let chunks: Vec<&[u32]> = if ids.is_empty() {
            vec![&[]]
        } else {
            ids.chunks(CONTEXT_LENGTH - 2).collect()
        };
        chunks
            .into_iter()
            .map(|chunk| {
                let mut window = [pad; CONTEXT_LENGTH];
                window[0] = START_OF_TEXT;
                window[1..=chunk.len()].copy_from_slice(chunk);
                window[chunk.len() + 1] = END_OF_TEXT;
                window
            })
            .collect()
    }
}

/// Bytes that CLIP maps to the character of the same code point.
fn is_printable(b: u8) -> bool {
    (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174
}

/// CLIP's reversible map from bytes to printable characters, indexed by byte.
fn bytes_to_unicode() -> Vec<char> {
    let mut extra = 0;
    (0..=255u8)
        .map(|b| {
            if is_printable(b) {
                char::from(b)
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap_or(' ')
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_words_and_windows_long_prompts() {
        let tokenizer = ClipTokenizer::standard().unwrap();
        assert_eq!(tokenizer.encode("a photo"), [320, 1125]);
        let windows = tokenizer.windows(&"cat ".repeat(100), 0);
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0][76], END_OF_TEXT);
        assert_eq!(windows[1][26], END_OF_TEXT);
        assert_eq!(windows[1][27], 0);
        assert_eq!(
            tokenizer.windows("", END_OF_TEXT)[0][..3],
            [START_OF_TEXT, END_OF_TEXT, END_OF_TEXT]
        );
    }

    #[test]
    fn a_checkpoint_vocabulary_replaces_the_standard_one() {
        let vocab = r#"{"h": 1, "e": 2, "l": 3, "o</w>": 4, "he": 5, "ll": 6, "hell": 7, "hello</w>": 8,
            "<|startoftext|>": 49406, "<|endoftext|>": 49407}"#;
        let merges = "#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\n";
        let tokenizer = ClipTokenizer::from_vocab_and_merges(vocab, merges).unwrap();
        assert_eq!(tokenizer.encode("Hello"), [8]);
        let partial = ClipTokenizer::from_vocab_and_merges(vocab, "#version: 0.2\nh e\nl l\n").unwrap();
        assert_eq!(
            partial.encode("hello"),
            [5, 6, 4],
            "without the later merges the word stays in pieces"
        );
        let wrong_id = vocab.replace("49407", "7");
        let message =
            |result: Result<ClipTokenizer, VocabularyError>| result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(ClipTokenizer::from_vocab_and_merges(&wrong_id, merges)).contains("CLIP's is 49407"));
        assert!(ClipTokenizer::from_vocab_and_merges("[1]", merges).is_err());
        assert!(message(ClipTokenizer::from_vocab_and_merges(vocab, "#version\nnospace\n")).contains("line 2"));
    }
}
