//! A reload (SIGHUP with a valid config): the live settings go to the running pipeline at
//! once; keys that only a restart can apply are named in the log and keep their running
//! values; the `reload` line says what changed, old -> new. Runs on the tokio thread; the config was read and checked beforehand (an invalid
//! file never gets here, and the running config stays).

use crate::config::Config;
use crate::events;
use crate::pipeline::control::{needs_restart, LiveSettings};
use crate::pipeline::Pipeline;

pub(crate) fn apply(pipeline: &Pipeline, new: &Config) {
    let restart = needs_restart(&pipeline.started_with, new);
    if !restart.is_empty() {
        log::warn!(
            "{}",
            events::ReloadNeedsRestart {
                keys: restart.join(", ")
            }
        );
    }
    let old = pipeline.control.settings().live.clone();
    let settings = pipeline.reconfigure(&LiveSettings::from_config(new));
    let live = &settings.live;
    let changes = old.changes(live);
    log::info!(
        "{}",
        events::Reload {
            applied: true,
            fps: live.fps,
            fit: live.fit.name().into(),
            rotation: live.rotation.degrees(),
            frames_per_transition: live.frames_per_transition,
            easing: live.easing.name().into(),
            themes: live.prompts.themes.len(),
            schedule_periods: live.schedule.len(),
            buffer_capacity_frames: pipeline.buffer.level().capacity_frames,
            changed: Some(if changes.is_empty() {
                "nothing".into()
            } else {
                changes.join(", ")
            }),
        }
    );
}
