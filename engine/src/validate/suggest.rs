//! "Did you mean" suggestions for near-miss names.

/// How similar (Jaro-Winkler, case-insensitive) a candidate must be to be suggested.
const MIN_SIMILARITY: f64 = 0.8;

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(&word, &candidate.to_lowercase()), candidate))
        .filter(|(score, _)| *score >= MIN_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate.to_string())
}

/// `; did you mean "x"?` or nothing, for the end of a message.
pub fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean \"{s}\"?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let types = ["CheckpointLoaderSimple", "KSampler", "VAEDecode"];
        assert_eq!(
            closest("CheckpointLoader", types).as_deref(),
            Some("CheckpointLoaderSimple")
        );
        assert_eq!(closest("ksampler", types).as_deref(), Some("KSampler"));
        assert_eq!(closest("Upscale", types), None);
        assert_eq!(closest("eular", ["euler", "ddim"]).as_deref(), Some("euler"));
    }
}
