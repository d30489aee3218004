//! The memory budget for decoded frames: how `buffer.max-megabytes` is shared by everything that
//! holds them. Pure arithmetic, used by validation (to refuse what cannot fit) and by the run (to
//! size the frame queue, the replay history and the decode batch).

/// How `buffer.max-megabytes` is shared by everything that holds decoded frames. The replay
/// history and the decode batch get at most an eighth of it each; the buffer gets the rest.
/// Screen buffers (three at screen size), the terminal sink's copies and the renderer's scratch
/// frame depend on the screen, not on the frames, and are not counted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBudget {
    pub frame_bytes: usize,
    /// Bytes of frames the buffer may hold.
    pub buffer_bytes: usize,
    /// Frames of replay history (ping-pong, the snapshot) there is room for: one second at the
    /// highest fps a reload may set, or fewer when frames are large.
    pub history_frames: usize,
    /// Frames decoded at once (the configured batch, or fewer when frames are large).
    pub decode_batch: usize,
}

/// The most history ever wanted: one second at the highest `display.fps`.
const MAX_HISTORY_FRAMES: usize = 240;

const MIB: f64 = 1024.0 * 1024.0;

impl FrameBudget {
    /// The split for `max_bytes`, frames of `frame_bytes` and batches of `batch_size`; an
    /// error (what to change) when not even one frame of each fits.
    pub fn plan(max_bytes: usize, frame_bytes: usize, batch_size: usize) -> Result<Self, String> {
        let frame_bytes = frame_bytes.max(1);
        let needed = 3 * frame_bytes;
        if max_bytes < needed {
            return Err(format!(
                "too small for frames of {:.1} MiB: the buffer, the replay history and the batch being decoded need at least one frame each, {} MiB in all",
                frame_bytes as f64 / MIB,
                (needed as f64 / MIB).ceil()
            ));
        }
        let eighth = (max_bytes / 8 / frame_bytes).max(1);
        let history_frames = MAX_HISTORY_FRAMES.clamp(1, eighth);
        let decode_batch = batch_size.clamp(1, eighth);
        Ok(Self {
            frame_bytes,
            buffer_bytes: max_bytes - (history_frames + decode_batch) * frame_bytes,
            history_frames,
            decode_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_shares_the_megabytes_and_refuses_what_cannot_fit() {
        const MB: usize = 1024 * 1024;
        // Small frames: the whole history and batch fit in an eighth each.
        let small = FrameBudget::plan(512 * MB, 110_592, 10).unwrap();
        assert_eq!((small.history_frames, small.decode_batch), (240, 10));
        assert_eq!(small.buffer_bytes, 512 * MB - 250 * 110_592);
        // 4096x4096 frames (48 MiB): one frame each, the rest buffered.
        let frame = 4096 * 4096 * 3;
        let big = FrameBudget::plan(512 * MB, frame, 10).unwrap();
        assert_eq!((big.history_frames, big.decode_batch), (1, 1));
        assert_eq!(big.buffer_bytes / frame, 8);
        let error = FrameBudget::plan(MB, frame, 10).unwrap_err();
        assert!(error.contains("at least one frame each"), "{error}");
    }
}
