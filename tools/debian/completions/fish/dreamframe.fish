# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_dreamframe_global_optspecs
    string join \n config= check-config= sink= seed= duration= output-dir= h/help V/version
end

function __fish_dreamframe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_dreamframe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_dreamframe_using_subcommand
    set -l cmd (__fish_dreamframe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c dreamframe -n "__fish_dreamframe_needs_command" -l config -d 'Config file (TOML); without it the built-in defaults are used' -r -F
complete -c dreamframe -n "__fish_dreamframe_needs_command" -l check-config -d 'Check a config file, print every problem, and exit (0: valid, 78: invalid)' -r -F
complete -c dreamframe -n "__fish_dreamframe_needs_command" -l sink -d 'Show the art here instead of the configured sink' -r -f -a "auto\t''
drm\t''
fbdev\t''
terminal\t''
null\t''"
complete -c dreamframe -n "__fish_dreamframe_needs_command" -l seed -d 'Seed of the run (overrides the config\'s `seed`)' -r
complete -c dreamframe -n "__fish_dreamframe_needs_command" -l duration -d 'Stop after this many seconds (default: run until SIGTERM/SIGINT)' -r
complete -c dreamframe -n "__fish_dreamframe_needs_command" -l output-dir -d 'Folder for status.json, snapshot.png and the log (overrides `output.dir`)' -r -F
complete -c dreamframe -n "__fish_dreamframe_needs_command" -s h -l help -d 'Print help'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -s V -l version -d 'Print version'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -f -a "probe" -d 'Probe the DRM cards (connectors and their modes, planes and their formats, whether we could be master), the framebuffer and the console and print what they support (driver, sizes, pixel layout, panning, vsync, VT mode), then exit; the display keeps what it showed'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -f -a "status" -d 'Show how the running display is doing (from status.json in its output folder): state, fps, buffer, generator, errors, uptime. Exit 0: running; 3: not running; 1: stuck'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -f -a "bench" -d 'Measure decode, upscale+convert, pacing jitter and sustained fps on this machine'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -f -a "bench-sd" -d 'Measure Stable Diffusion at real sizes with random weights: VAE and tiny-decoder ms/frame, UNet step and keyframe ms (meant for a GPU: `--features cuda,cudnn`)'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -f -a "bench-display" -d 'Measure the drm sink on this machine\'s screen: copy + flip cost per frame against the fbdev copy, and flip-to-deadline lateness and missed flips at each `--fps` (needs the screen to itself: stop the display first)'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -f -a "gallery" -d 'Render the built-in styles\' keyframes to PNG files, plus a contact sheet, to see the art without a screen (uses the config\'s [model] size and style sections)'
complete -c dreamframe -n "__fish_dreamframe_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand probe" -l card -d 'DRM card (default: the config\'s display.card, else every card under /dev/dri)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand probe" -l framebuffer -d 'Framebuffer device (default: the config\'s display.framebuffer)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand probe" -l console -d 'Virtual terminal whose mode to report (default: the config\'s display.console)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand probe" -l config -d 'Config file (TOML); without it the built-in defaults are used' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand probe" -l output-dir -d 'Folder for status.json, snapshot.png and the log (overrides `output.dir`)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand probe" -s h -l help -d 'Print help'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand status" -l interval -d 'Seconds between refreshes with --watch, 0.2 to 3600' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand status" -l config -d 'Config file (TOML); without it the built-in defaults are used' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand status" -l output-dir -d 'Folder for status.json, snapshot.png and the log (overrides `output.dir`)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand status" -l watch -d 'Refresh every `--interval` seconds until interrupted'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand status" -l json -d 'Print status.json itself'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand status" -l picture -d 'Show the current snapshot in the terminal, sized to it, above the summary'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand status" -s h -l help -d 'Print help'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -l seconds -d 'Seconds for each timed run (jitter, sustained fps), 1 to 3600' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -l width -d 'Screen width to upscale to, 16 to 7680' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -l height -d 'Screen height to upscale to, 16 to 4320' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -l fps -d 'Display rate for the jitter and sustained runs, 1 to 240' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -l style -d 'The built-in style to decode and play, at its shipped settings' -r -f -a "cppn\t''
warp\t''
flame\t''"
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -l config -d 'Config file (TOML); without it the built-in defaults are used' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -l output-dir -d 'Folder for status.json, snapshot.png and the log (overrides `output.dir`)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench" -s h -l help -d 'Print help'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l preset -d 'Model layout: sd-turbo, sd-1.5, sd-2.1 or sdxl-turbo' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l device -d '"cpu" or "cuda:N"' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l size -d 'Square image size in pixels, a multiple of 8 (default: the preset\'s native size)' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l runs -d 'Timed repetitions of each measurement (median and spread are reported)' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l warmups -d 'Untimed calls before each measurement\'s timed ones (0 to 100)' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l dtype -d 'The model\'s number type: f16, bf16 or f32 (default: f16 on CUDA, f32 on the CPU)' -r -f -a "f16\t''
bf16\t''
f32\t''"
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l check-size -d 'Square size of the pictures `check` compares (default: --size); the f32 reference runs on the CPU, where 512 takes a while' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l conv -d 'cuDNN conv setups to compare, comma-separated (default: all the build has, per-call first); with --pipeline, the one to run with' -r -f -a "per-call\t'Upstream candle 0.11.1: descriptors, algorithm query and zero-filled workspace per call, and upstream\'s kernels for broadcast binary ops (bias, GroupNorm) too: the "before"'
cached-heuristic\t'Plan per shape from cuDNN\'s heuristic, persistent workspace, f16 with tensor-core math'
cached-benchmark\t'As cached-heuristic with the algorithm timed once per shape (the default)'"
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l pipeline -d 'Instead of the measurements: run dreamframe\'s own pipeline this many seconds (1 to 3600) with the random-weight model (img2img keyframes), into the null sink, logging to stderr, and print the final status' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l screen -d '--pipeline: the screen\'s size, WIDTHxHEIGHT (16x16 to 7680x4320)' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l fps -d '--pipeline: display rate, 1 to 240' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l inbetweens -d '--pipeline: what decodes the in-between frames: tiny (TAESD) or full (the VAE)' -r -f -a "tiny\t''
full\t''"
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l steps -d 'Keyframe steps, for the keyframe timings and --pipeline (default: the preset\'s)' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l start-seconds -d '--pipeline: seconds of frames buffered before playback starts (buffer.start-seconds)' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l only -d 'Only these parts, comma-separated (e.g. to profile one): check, broadcast_check, group_norm_check, attention_check, host_work, vae_64px_b1, vae_b1, vae_b4, vae_b10, vae_b1_candle_norm (candle-nn\'s group norms instead of the fused ones), vae_b10_singly (the same ten latents one at a time), taesd_b10, unet_step, unet_step_unfused (candle-nn\'s group norms and f32 attention scores), conv_shapes (the heaviest convolutions alone, NCHW and channels-last input, on a GPU), keyframe_txt2img, keyframe_img2img' -r -f -a "check\t''
broadcast_check\t''
group_norm_check\t''
attention_check\t''
host_work\t''
vae_64px_b1\t''
vae_b1\t''
vae_b4\t''
vae_b10\t''
vae_b1_candle_norm\t''
vae_b10_singly\t''
taesd_b10\t''
unet_step\t''
unet_step_unfused\t''
conv_shapes\t''
keyframe_txt2img\t''
keyframe_img2img\t''"
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l config -d 'Config file (TOML); without it the built-in defaults are used' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l output-dir -d 'Folder for status.json, snapshot.png and the log (overrides `output.dir`)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -l adapt -d '--pipeline: let capacity-aware playback lower the quality (off: the quality asked for is held, and a model too slow for it shows as underruns)'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-sd" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -l seconds -d 'Seconds for each paced run, 1 to 3600' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -l fps -d 'Display rates for the paced runs, 1 to 240 each' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -l frames -d 'Frames for the cost per frame, 10 to 10000' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -l card -d 'DRM card (default: the config\'s display.card, else the first with a screen)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -l framebuffer -d 'Framebuffer for the fbdev comparison (default: the config\'s display.framebuffer)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -l config -d 'Config file (TOML); without it the built-in defaults are used' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -l output-dir -d 'Folder for status.json, snapshot.png and the log (overrides `output.dir`)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand bench-display" -s h -l help -d 'Print help'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l out -d 'Folder for the PNG files (made if missing; files of the same names are replaced)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l styles -d 'Styles, comma-separated (default: every built-in style)' -r -f -a "cppn\t''
warp\t''
flame\t''"
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l seeds -d 'Seeds per style, 1 to 64: this many, counting up from --seed' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l seed -d 'The first seed' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l keyframes -d 'Keyframes written per style and seed, 1 to 64' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l every -d 'Keyframes of the walk between two written ones, 1 to 10000 (at the shipped transition of 90 frames at 30 fps, 20 is a minute)' -r
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l config -d 'Config file (TOML); without it the built-in defaults are used' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -l output-dir -d 'Folder for status.json, snapshot.png and the log (overrides `output.dir`)' -r -F
complete -c dreamframe -n "__fish_dreamframe_using_subcommand gallery" -s h -l help -d 'Print help'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand help; and not __fish_seen_subcommand_from probe status bench bench-sd bench-display gallery help" -f -a "probe" -d 'Probe the DRM cards (connectors and their modes, planes and their formats, whether we could be master), the framebuffer and the console and print what they support (driver, sizes, pixel layout, panning, vsync, VT mode), then exit; the display keeps what it showed'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand help; and not __fish_seen_subcommand_from probe status bench bench-sd bench-display gallery help" -f -a "status" -d 'Show how the running display is doing (from status.json in its output folder): state, fps, buffer, generator, errors, uptime. Exit 0: running; 3: not running; 1: stuck'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand help; and not __fish_seen_subcommand_from probe status bench bench-sd bench-display gallery help" -f -a "bench" -d 'Measure decode, upscale+convert, pacing jitter and sustained fps on this machine'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand help; and not __fish_seen_subcommand_from probe status bench bench-sd bench-display gallery help" -f -a "bench-sd" -d 'Measure Stable Diffusion at real sizes with random weights: VAE and tiny-decoder ms/frame, UNet step and keyframe ms (meant for a GPU: `--features cuda,cudnn`)'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand help; and not __fish_seen_subcommand_from probe status bench bench-sd bench-display gallery help" -f -a "bench-display" -d 'Measure the drm sink on this machine\'s screen: copy + flip cost per frame against the fbdev copy, and flip-to-deadline lateness and missed flips at each `--fps` (needs the screen to itself: stop the display first)'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand help; and not __fish_seen_subcommand_from probe status bench bench-sd bench-display gallery help" -f -a "gallery" -d 'Render the built-in styles\' keyframes to PNG files, plus a contact sheet, to see the art without a screen (uses the config\'s [model] size and style sections)'
complete -c dreamframe -n "__fish_dreamframe_using_subcommand help; and not __fish_seen_subcommand_from probe status bench bench-sd bench-display gallery help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
