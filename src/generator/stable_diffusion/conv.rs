//! How CUDA convolutions are set up: the switch and host-work counters of the patched candle-core
//! (tools/vendor/README.md), so `bench-sd` can run upstream candle's per-call path (and its
//! broadcast kernels) and our cached paths side by side. Builds without cuDNN have only the build's
//! own path: switching is refused and there are no counters. Process-wide; called from the bench
//! thread only.

/// One way of setting up cuDNN forward convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ConvSetup {
    /// Upstream candle 0.11.1: descriptors, algorithm query and zero-filled workspace per call,
    /// and upstream's kernels for broadcast binary ops (bias, GroupNorm) too: the "before".
    PerCall,
    /// Plan per shape from cuDNN's heuristic, persistent workspace, f16 with tensor-core math.
    CachedHeuristic,
    /// As cached-heuristic with the algorithm timed once per shape (the default).
    CachedBenchmark,
}

impl ConvSetup {
    pub(crate) const ALL: [ConvSetup; 3] = [
        ConvSetup::PerCall,
        ConvSetup::CachedHeuristic,
        ConvSetup::CachedBenchmark,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ConvSetup::PerCall => "per-call",
            ConvSetup::CachedHeuristic => "cached-heuristic",
            ConvSetup::CachedBenchmark => "cached-benchmark",
        }
    }
}

/// Host work done by cuDNN conv2d calls since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConvCounters {
    pub calls: u64,
    pub descriptor_sets: u64,
    pub algorithm_searches: u64,
    pub workspace_allocations: u64,
}

impl std::ops::Sub for ConvCounters {
    type Output = ConvCounters;
    fn sub(self, earlier: ConvCounters) -> ConvCounters {
        ConvCounters {
            calls: self.calls - earlier.calls,
            descriptor_sets: self.descriptor_sets - earlier.descriptor_sets,
            algorithm_searches: self.algorithm_searches - earlier.algorithm_searches,
            workspace_allocations: self.workspace_allocations - earlier.workspace_allocations,
        }
    }
}

#[cfg(feature = "cudnn")]
mod imp {
    use super::{ConvCounters, ConvSetup};
    use candle_core::cudnn;

    pub fn set(setup: ConvSetup) -> anyhow::Result<()> {
        candle_core::cuda_backend::broadcast::set_fast_broadcast(setup != ConvSetup::PerCall);
        cudnn::set_conv_setup(match setup {
            ConvSetup::PerCall => cudnn::ConvSetup::PerCall,
            ConvSetup::CachedHeuristic => cudnn::ConvSetup::CachedHeuristic,
            ConvSetup::CachedBenchmark => cudnn::ConvSetup::CachedBenchmark,
        });
        Ok(())
    }

    pub fn broadcast_error() -> Option<String> {
        candle_core::cuda_backend::broadcast::fast_broadcast_error()
    }

    pub fn set_fast_broadcast(enabled: bool) -> anyhow::Result<()> {
        candle_core::cuda_backend::broadcast::set_fast_broadcast(enabled);
        Ok(())
    }

    pub fn counters() -> Option<ConvCounters> {
        let c = cudnn::conv_counters();
        Some(ConvCounters {
            calls: c.calls,
            descriptor_sets: c.descriptor_sets,
            algorithm_searches: c.algorithm_searches,
            workspace_allocations: c.workspace_allocations,
        })
    }
}

#[cfg(not(feature = "cudnn"))]
mod imp {
    use super::{ConvCounters, ConvSetup};

    pub(crate) fn set(setup: ConvSetup) -> anyhow::Result<()> {
        anyhow::bail!(
            "conv setup {:?} needs a build with cuDNN (`--features cuda,cudnn`); this one has none",
            setup.name()
        )
    }

    pub(crate) fn counters() -> Option<ConvCounters> {
        None
    }

    pub(crate) fn broadcast_error() -> Option<String> {
        None
    }

    pub(crate) fn set_fast_broadcast(_: bool) -> anyhow::Result<()> {
        anyhow::bail!(
            "the fast broadcast kernels need a build with cuDNN (`--features cuda,cudnn`)"
        )
    }
}

/// Chooses how later CUDA conv2d calls are set up; an error on builds without cuDNN.
pub(crate) fn set(setup: ConvSetup) -> anyhow::Result<()> {
    imp::set(setup)
}

/// `None` on builds without cuDNN.
pub(crate) fn counters() -> Option<ConvCounters> {
    imp::counters()
}

/// Switches the patched candle's fast broadcast kernels on or off for later binary ops (off:
/// upstream's), whatever the conv setup; an error on builds without cuDNN.
pub(crate) fn set_fast_broadcast(enabled: bool) -> anyhow::Result<()> {
    imp::set_fast_broadcast(enabled)
}

/// Why the patched candle's fast broadcast kernels are not in use (they failed to compile with
/// NVRTC; upstream's serve instead), once a binary op has tried them.
pub(crate) fn broadcast_error() -> Option<String> {
    imp::broadcast_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_without_cudnn_refuse_to_switch_and_count_nothing() {
        if cfg!(feature = "cudnn") {
            return;
        }
        let error = set(ConvSetup::PerCall).unwrap_err().to_string();
        assert!(
            error.contains("\"per-call\" needs a build with cuDNN"),
            "{error}"
        );
        assert_eq!(counters(), None);
    }

    #[test]
    fn counter_differences_are_per_field() {
        let earlier = ConvCounters {
            calls: 1,
            descriptor_sets: 2,
            algorithm_searches: 3,
            workspace_allocations: 4,
        };
        let later = ConvCounters {
            calls: 37,
            descriptor_sets: 2,
            algorithm_searches: 5,
            workspace_allocations: 4,
        };
        let expected = ConvCounters {
            calls: 36,
            descriptor_sets: 0,
            algorithm_searches: 2,
            workspace_allocations: 0,
        };
        assert_eq!(later - earlier, expected);
    }
}
