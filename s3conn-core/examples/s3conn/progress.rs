//! Progress on stderr (hidden when stderr is not a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use s3conn_core::Progress;

/// A spinner that shows rows, objects and bytes read so far.
pub(crate) fn bar(label: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    bar.set_prefix(label);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Show `p` on `bar`.
pub(crate) fn show(bar: &ProgressBar, p: &Progress) {
    bar.set_message(format!(
        "{} rows, {} objects, {:.1} MB read",
        p.rows,
        p.objects,
        p.bytes as f64 / 1e6
    ));
}

/// A bar of bytes read out of `total`, with a message (hidden when stderr is not a
/// terminal).
pub(crate) fn bytes(label: &'static str, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix}: [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
