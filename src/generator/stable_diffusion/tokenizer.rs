//! CLIP's tokenizer, loaded from a model repo's own `tokenizer/` folder, and the token ids a
//! prompt gives the text encoder.
//!
//! Input: the folder (`vocab.json` + `merges.txt`, as `huggingface-cli download` gives every
//! Stable Diffusion repo; or a `tokenizer.json`), the encoder's padding token and context
//! length, a prompt. Output: exactly the ids transformers' `CLIPTokenizer` gives when
//! `StableDiffusionPipeline.encode_prompt` calls it (`padding="max_length"`, `truncation=True`):
//! start token, the prompt's tokens cut to fit, end token, padding. Checked against it on 32
//! prompts with the real CLIP vocabulary (tests/reference.rs). Runs on the
//! keyframe thread when a theme is first used. Errors name the folder and the file.
//!
//! The pipeline below is the one transformers builds for CLIP (tokenization_clip.py); its
//! parts come from the `tokenizers` crate, nothing is hand-written but their order.

use std::path::Path;

use anyhow::{bail, Context};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as Normalizers, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

pub(crate) const START: &str = "<|startoftext|>";
pub(crate) const END: &str = "<|endoftext|>";

/// CLIP's word pattern (with its two special tokens first, as transformers has it).
const WORDS: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The largest tokenizer file read. CLIP's are 1.0 MiB (vocab.json), 0.5 MiB (merges.txt) and
/// 2.1 MiB (tokenizer.json); parsing takes some 30 times a file's size in memory, so a
/// runaway file must be refused, not loaded.
pub(crate) const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The file names a tokenizer folder may hold, for error messages.
pub(crate) const FILES: &str = "vocab.json and merges.txt (or tokenizer.json)";

/// Whether `folder` holds a tokenizer this module can load.
pub(crate) fn present(folder: &Path) -> bool {
    (folder.join("vocab.json").is_file() && folder.join("merges.txt").is_file())
        || folder.join("tokenizer.json").is_file()
}

/// Loads the tokenizer in `folder`; `pad` becomes a special token as it is for transformers
/// (so sd-2.x's pad token "!" typed in a prompt is that token, id 0, as there).
pub(crate) fn load(folder: &Path, pad: &str) -> anyhow::Result<Tokenizer> {
    let (vocab, merges) = (folder.join("vocab.json"), folder.join("merges.txt"));
    let mut tokenizer = if vocab.is_file() && merges.is_file() {
        from_vocab_and_merges(&vocab, &merges).with_context(|| {
            format!(
                "cannot read tokenizer {} + {}",
                vocab.display(),
                merges.display()
            )
        })?
    } else {
        let file = folder.join("tokenizer.json");
        // Anything else standing there (a FIFO, a folder) is named by the read below.
        if !file.exists() {
            bail!(
                "missing tokenizer in {}: expected {FILES} (see the README, \"Model weights\")",
                folder.display()
            );
        }
        crate::checked_fs::read_regular(&file, MAX_FILE_BYTES)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Tokenizer::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}")))
            .with_context(|| format!("cannot read tokenizer {}", file.display()))?
    };
    for token in [START, END, pad] {
        if tokenizer.token_to_id(token).is_none() {
            bail!(
                "tokenizer in {} has no token {token} in its vocabulary",
                folder.display()
            );
        }
    }
    tokenizer
        .add_special_tokens([START, END, pad].map(|t| AddedToken::from(t, true)))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("tokenizer in {}", folder.display()))?;
    Ok(tokenizer)
}

fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> anyhow::Result<Tokenizer> {
    let path = |p: &Path| {
        p.to_str()
            .map(str::to_string)
            .with_context(|| format!("{} is not a UTF-8 path", p.display()))
    };
    let error = |e| anyhow::anyhow!("{e}");
    // Looked at first: bounded, and never a FIFO the parser would wait on for ever.
    for file in [vocab, merges] {
        crate::checked_fs::open_regular(file, MAX_FILE_BYTES)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let bpe = BPE::from_file(&path(vocab)?, &path(merges)?)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".into())
        .unk_token(END.into())
        .fuse_unk(false)
        .build()
        .map_err(error)?;
    let mut tokenizer = Tokenizer::new(bpe);
    let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(error)?;
    tokenizer
        .with_normalizer(Some(Normalizers::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])))
        .map_err(error)?;
    let words = Split::new(
        SplitPattern::Regex(WORDS.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(error)?;
    // ByteLevel(add_prefix_space=False) with its defaults: trim offsets, GPT-2's regex.
    tokenizer.with_pre_tokenizer(Some(PreTokenizers::new(vec![
        words.into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

/// The ids for `prompt`: start, tokens (cut to `length - 2`), end, then `pad` up to `length`.
pub(crate) fn token_ids(
    tokenizer: &Tokenizer,
    pad: &str,
    length: usize,
    prompt: &str,
) -> anyhow::Result<Vec<u32>> {
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .with_context(|| format!("tokenizer has no token {token}"))
    };
    let content = tokenizer
        .encode(prompt, false)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot tokenize prompt {prompt:?}"))?;
    let content = content.get_ids();
    let room = length.saturating_sub(2);
    if content.len() > room {
        log::warn!(
            "{}",
            crate::events::PromptTruncated {
                tokens: content.len() + 2,
                max: length,
                prompt: crate::events::logged_prompt(prompt),
            }
        );
    }
    let mut ids = Vec::with_capacity(length);
    ids.push(id(START)?);
    ids.extend_from_slice(&content[..content.len().min(room)]);
    ids.push(id(END)?);
    ids.resize(length, id(pad)?);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runaway_or_special_tokenizer_file_is_refused_before_it_is_parsed() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("vocab.json"), b"{}").unwrap();
        // Sparse: 9 MiB long, nothing on disk.
        let merges = std::fs::File::create(dir.path().join("merges.txt")).unwrap();
        merges.set_len(MAX_FILE_BYTES + 1024 * 1024).unwrap();
        let error = format!("{:#}", load(dir.path(), END).unwrap_err());
        assert!(
            error.contains("merges.txt") && error.contains("larger than the 8 MiB allowed"),
            "{error}"
        );

        // tokenizer.json as a FIFO with no writer: refused, not waited on.
        let fifo_dir = tempfile::tempdir().expect("temp dir");
        let fifo = fifo_dir.path().join("tokenizer.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let error = format!("{:#}", load(fifo_dir.path(), END).unwrap_err());
        assert!(
            error.contains("tokenizer.json: is a FIFO, expected a regular file"),
            "{error}"
        );
    }
}
