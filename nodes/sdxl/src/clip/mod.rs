//! SDXL's text side: CLIP's tokenizer and the two CLIP text encoders.

mod config;
mod encoder;
mod tokenizer;

pub use config::{Activation, ClipConfig};
pub use encoder::{ClipOutput, ClipTextEncoder};
pub use tokenizer::{ClipTokenizer, VocabularyError, CONTEXT_LENGTH, END_OF_TEXT, START_OF_TEXT};
