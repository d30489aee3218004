//! CLIP's tokenizer, loaded from a model repo's own `tokenizer/` folder, and the token ids a
//! prompt gives the text encoder.
//!
//! Input: the folder (`vocab.json` + `merges.txt`, as `huggingface-cli download` gives every
//! Stable Diffusion repo; or a `tokenizer.json`), the encoder's padding token and context
//! length, a prompt. Output: exactly the ids transformers' `CLIPTokenizer` gives when
//! `StableDiffusionPipeline.encode_prompt` calls it (`padding="max_length"`, `truncation=True`):
//! start token, the prompt's tokens cut to fit, end token, padding. Checked against it on 32
//! prompts with the real CLIP vocabulary (tests/integration/sd_reference.rs). Runs on the
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

pub const START: &str = "<|startoftext|>";
pub const END: &str = "<|endoftext|>";

/// CLIP's word pattern (with its two special tokens first, as transformers has it).
const WORDS: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The file names a tokenizer folder may hold, for error messages.
pub const FILES: &str = "vocab.json and merges.txt (or tokenizer.json)";

/// Whether `folder` holds a tokenizer this module can load.
pub fn present(folder: &Path) -> bool {
    (folder.join("vocab.json").is_file() && folder.join("merges.txt").is_file())
        || folder.join("tokenizer.json").is_file()
}

/// Loads the tokenizer in `folder`; `pad` becomes a special token as it is for transformers
/// (so sd-2.x's pad token "!" typed in a prompt is that token, id 0, as there).
pub fn load(folder: &Path, pad: &str) -> anyhow::Result<Tokenizer> {
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
        if !file.is_file() {
            bail!(
                "missing tokenizer in {}: expected {FILES} (see the README, \"Model weights\")",
                folder.display()
            );
        }
        Tokenizer::from_file(&file)
            .map_err(|e| anyhow::anyhow!("{e}"))
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
pub fn token_ids(
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
                prompt: prompt.to_string(),
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
