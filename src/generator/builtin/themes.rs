//! What the themes mean to the built-in styles. A theme may name a `palette`: the keyframes
//! made while it is shown steer their colours to it. A theme without one leans towards the
//! palette its prompt names in words ("sunset", "glacier", "ink"...), the free palette keeping
//! a share. With model.kind = "mix" a theme also picks the style (`style`, else the styles in
//! turn). Themes rotate every `prompts.rotation-interval` keyframes, and a re-anchor moves on to
//! the next one at once, as they do for Stable Diffusion.
//!
//! Inputs: the [prompts] settings. Outputs: each keyframe's palette, style and label. Owned by
//! a generator, used on the keyframe thread; cannot fail.

use super::look::Palette;
use crate::config::{PromptsConfig, Style, Theme, ThemePalette};

/// How much of a keyframe's palette a theme's `palette` key sets: all of it.
const NAMED_WEIGHT: f32 = 1.0;
/// How much a palette found in the prompt's words sets: most, the free palette keeps the rest
/// (so three default themes do not become three fixed colour schemes).
const WORDS_WEIGHT: f32 = 0.65;

/// Words that call for a palette, per palette. A prompt leans to the palette of its first
/// word found here.
const WORDS: [(ThemePalette, &[&str]); 9] = [
    (
        ThemePalette::Ember,
        &[
            "fire", "flame", "flames", "ember", "embers", "lava", "magma", "volcano", "volcanic",
            "inferno", "blaze", "burning", "forge", "furnace",
        ],
    ),
    (
        ThemePalette::Ocean,
        &[
            "ocean",
            "sea",
            "seas",
            "water",
            "waves",
            "wave",
            "underwater",
            "tide",
            "lagoon",
            "liquid",
            "rain",
            "river",
            "abyss",
        ],
    ),
    (
        ThemePalette::Forest,
        &[
            "forest", "jungle", "moss", "leaf", "leaves", "garden", "tree", "trees", "fern",
            "ferns", "meadow", "grass", "spring", "foliage",
        ],
    ),
    (
        ThemePalette::Dusk,
        &[
            "dusk",
            "twilight",
            "sunset",
            "evening",
            "dawn",
            "sunrise",
            "dream",
            "dreamlike",
            "dreamy",
            "rose",
            "coral",
            "blossom",
        ],
    ),
    (
        ThemePalette::Ice,
        &[
            "ice", "icy", "snow", "frost", "frozen", "glacier", "winter", "arctic", "pearl",
            "crystal", "crystals",
        ],
    ),
    (
        ThemePalette::Desert,
        &[
            "desert", "sand", "dune", "dunes", "gold", "golden", "autumn", "amber", "ochre",
            "rust", "earth", "canyon",
        ],
    ),
    (
        ThemePalette::Night,
        &[
            "night", "space", "cosmos", "cosmic", "galaxy", "galaxies", "stars", "starry",
            "nebula", "nebulae", "midnight", "void",
        ],
    ),
    (
        ThemePalette::Ink,
        &[
            "ink",
            "charcoal",
            "pencil",
            "monochrome",
            "graphite",
            "smoke",
            "shadow",
            "shadows",
            "sketch",
            "etching",
        ],
    ),
    (
        ThemePalette::Aurora,
        &[
            "aurora",
            "iridescent",
            "neon",
            "opal",
            "prism",
            "prismatic",
            "rainbow",
            "holographic",
            "psychedelic",
            "kaleidoscope",
        ],
    ),
];

/// The palette the words of `prompt` call for: the one of its first word found in `WORDS`.
pub(crate) fn palette_in_words(prompt: &str) -> Option<ThemePalette> {
    prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .find_map(|word| {
            let word = word.to_lowercase();
            WORDS
                .iter()
                .find(|(_, words)| words.contains(&word.as_str()))
                .map(|(palette, _)| *palette)
        })
}

/// The cosine palette a theme's palette name stands for.
pub(crate) fn named_palette(palette: ThemePalette) -> Palette {
    // base, amplitude, frequency, phase: `Palette::rgb`'s a + b cos(2 pi (c t + d)).
    let (base, amplitude, frequency, phase) = match palette {
        ThemePalette::Ember => (
            [0.55, 0.28, 0.1],
            [0.45, 0.3, 0.12],
            [1.0, 1.0, 1.0],
            [0.0, 0.08, 0.15],
        ),
        ThemePalette::Ocean => (
            [0.1, 0.38, 0.52],
            [0.1, 0.3, 0.38],
            [1.0, 1.0, 1.0],
            [0.15, 0.0, 0.05],
        ),
        ThemePalette::Forest => (
            [0.28, 0.42, 0.16],
            [0.22, 0.3, 0.14],
            [1.0, 1.0, 1.5],
            [0.05, 0.0, 0.2],
        ),
        ThemePalette::Dusk => (
            [0.55, 0.32, 0.5],
            [0.4, 0.28, 0.35],
            [1.0, 1.0, 1.0],
            [0.0, 0.28, 0.12],
        ),
        ThemePalette::Ice => (
            [0.72, 0.83, 0.9],
            [0.22, 0.16, 0.1],
            [1.0, 1.0, 1.0],
            [0.0, 0.06, 0.12],
        ),
        ThemePalette::Desert => (
            [0.68, 0.52, 0.32],
            [0.28, 0.25, 0.2],
            [1.0, 1.0, 1.0],
            [0.0, 0.06, 0.14],
        ),
        ThemePalette::Night => (
            [0.16, 0.14, 0.36],
            [0.2, 0.16, 0.34],
            [1.0, 1.4, 1.0],
            [0.32, 0.2, 0.0],
        ),
        // Indigo and sepia ink, not plain grey: the darks lean blue, the lights warm.
        ThemePalette::Ink => (
            [0.5, 0.48, 0.5],
            [0.44, 0.42, 0.4],
            [1.0, 1.0, 1.0],
            [0.0, 0.05, 0.14],
        ),
        ThemePalette::Aurora => (
            [0.3, 0.5, 0.5],
            [0.3, 0.45, 0.4],
            [1.0, 1.0, 1.0],
            [0.6, 0.0, 0.3],
        ),
    };
    Palette::new(base, amplitude, frequency, phase)
}

/// The themes as the built-in styles see them, and where the rotation stands.
#[derive(Debug, Clone)]
pub(crate) struct Themes {
    themes: Vec<Theme>,
    rotation_interval: u64,
    /// Themes skipped by re-anchors (`advance`), added to the rotation's place.
    skipped: u64,
}

impl Themes {
    pub(crate) fn new(prompts: &PromptsConfig) -> Self {
        Self {
            themes: prompts.themes.clone(),
            rotation_interval: prompts.rotation_interval.max(1),
            skipped: 0,
        }
    }

    /// No themes: every keyframe keeps its free palette, styles take turns.
    pub(crate) fn none() -> Self {
        Self::new(&PromptsConfig {
            rotation_interval: 1,
            themes: Vec::new(),
        })
    }

    /// Keyframe `index`'s place in the rotation: its theme's, counting from the first theme.
    fn place(&self, keyframe: u64) -> u64 {
        (keyframe / self.rotation_interval).wrapping_add(self.skipped)
    }

    /// The theme of keyframe `index` (its place in the list), if there are themes.
    pub(crate) fn index(&self, keyframe: u64) -> Option<usize> {
        let count = self.themes.len() as u64;
        (count > 0).then(|| (self.place(keyframe) % count) as usize)
    }

    /// The palette keyframe `index` steers to, with how much of the palette it sets.
    pub(crate) fn palette(&self, keyframe: u64) -> Option<(Palette, f32)> {
        let theme = &self.themes[self.index(keyframe)?];
        match theme.palette {
            Some(named) => Some((named_palette(named), NAMED_WEIGHT)),
            None => palette_in_words(&theme.positive).map(|p| (named_palette(p), WORDS_WEIGHT)),
        }
    }

    /// The style keyframe `index` shows with model.kind = "mix": its theme's, else the styles
    /// in turn, one per theme.
    pub(crate) fn style(&self, keyframe: u64) -> Style {
        let index = self.index(keyframe);
        if let Some(style) = index.and_then(|index| self.themes[index].style) {
            return style;
        }
        let turn = index.map_or(self.place(keyframe), |index| index as u64);
        Style::NAMED[(turn % Style::NAMED.len() as u64) as usize].1
    }

    /// Keyframe `index`'s theme and its prompt, for the log.
    pub(crate) fn label(&self, keyframe: u64) -> Option<(u64, &str)> {
        let index = self.index(keyframe)?;
        Some((index as u64, self.themes[index].positive.as_str()))
    }

    /// On to the next theme now (a re-anchor).
    pub(crate) fn advance(&mut self) {
        self.skipped = self.skipped.wrapping_add(1);
    }

    /// New themes from a reload.
    pub(crate) fn reconfigure(&mut self, prompts: &PromptsConfig) {
        self.themes = prompts.themes.clone();
        self.rotation_interval = prompts.rotation_interval.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn theme(positive: &str, style: Option<Style>, palette: Option<ThemePalette>) -> Theme {
        Theme {
            positive: positive.into(),
            negative: String::new(),
            style,
            palette,
        }
    }

    #[test]
    fn prompt_words_name_palettes() {
        assert_eq!(
            palette_in_words("A Sunset over the sea"),
            Some(ThemePalette::Dusk)
        );
        assert_eq!(
            palette_in_words("ink and watercolour clouds"),
            Some(ThemePalette::Ink)
        );
        assert_eq!(
            palette_in_words("glacier-blue crystals"),
            Some(ThemePalette::Ice)
        );
        assert_eq!(palette_in_words("abstract organic forms"), None);
        // Every default theme means a palette.
        for theme in crate::config::Config::default().prompts.themes {
            assert!(palette_in_words(&theme.positive).is_some(), "{theme:?}");
        }
    }

    #[test]
    fn every_named_palette_has_its_own_colours() {
        let mean = |palette: ThemePalette| {
            let palette = named_palette(palette);
            let mut sum = [0f32; 3];
            for step in 0..64 {
                let rgb = palette.rgb(step as f32 / 64.0, 1.0);
                for c in 0..3 {
                    sum[c] += rgb[c] as f32 / 64.0;
                }
            }
            sum
        };
        let means: Vec<[f32; 3]> = ThemePalette::NAMED.iter().map(|(_, p)| mean(*p)).collect();
        for (i, a) in means.iter().enumerate() {
            for (j, b) in means.iter().enumerate().skip(i + 1) {
                let distance: f32 = (0..3).map(|c| (a[c] - b[c]).abs()).sum();
                assert!(
                    distance > 30.0,
                    "palettes {i} and {j} look alike: {a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn themes_rotate_pick_styles_and_palettes() {
        let prompts = PromptsConfig {
            rotation_interval: 2,
            themes: vec![
                theme("lava fields", None, None),
                theme("plain", Some(Style::Warp), Some(ThemePalette::Ocean)),
                theme("plain", None, None),
            ],
        };
        let mut themes = Themes::new(&prompts);
        let indices: Vec<_> = (0..8).map(|k| themes.index(k).unwrap()).collect();
        assert_eq!(indices, [0, 0, 1, 1, 2, 2, 0, 0]);
        // The first leans to its words' palette, the second is set to its own, the third free.
        let (palette, weight) = themes.palette(0).unwrap();
        assert_eq!(
            (palette, weight),
            (named_palette(ThemePalette::Ember), WORDS_WEIGHT)
        );
        assert_eq!(
            themes.palette(2),
            Some((named_palette(ThemePalette::Ocean), NAMED_WEIGHT))
        );
        assert_eq!(themes.palette(4), None);
        // Styles: the theme's own, else in turn by the theme's place.
        let styles: Vec<_> = [0, 2, 4].iter().map(|k| themes.style(*k)).collect();
        assert_eq!(styles, [Style::Cppn, Style::Warp, Style::Flame]);
        assert_eq!(themes.label(2), Some((1, "plain")));
        // A re-anchor moves on at once.
        themes.advance();
        assert_eq!(themes.index(0), Some(1));
        assert_eq!(themes.style(0), Style::Warp);
        assert_eq!(themes.style(2), Style::Flame);
        themes.reconfigure(&PromptsConfig {
            rotation_interval: 1,
            themes: vec![theme("a", None, None), theme("b", Some(Style::Warp), None)],
        });
        assert_eq!(themes.style(0), Style::Warp);
        assert_eq!(themes.style(1), Style::Cppn);
        // Without themes the styles still take turns.
        let free = Themes::none();
        assert_eq!(free.palette(3), None);
        let turns: Vec<_> = (0..4).map(|k| free.style(k)).collect();
        assert_eq!(turns, [Style::Cppn, Style::Warp, Style::Flame, Style::Cppn]);
    }
}
