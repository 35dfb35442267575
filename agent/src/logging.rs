//! Log setup: text or JSON lines on stderr, at the configured filter.
//! Colours only when stderr is a terminal and `NO_COLOR` is unset: a log
//! file or journald gets plain text. The filter can be changed while the
//! agent runs (SIGHUP).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Changes the log filter of the running agent.
pub(crate) type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// `items` as strings, for a list field: in JSON logs it is an array
/// (`field = tracing::field::valuable(&listed(..))`), in text `["a", "b"]`.
pub(crate) fn listed<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Whether `level` is a filter `EnvFilter` takes.
pub(crate) fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("{level:?} is not a log filter: {e}"))
}

/// Installs the global subscriber at `level` (checked by
/// [`check_level`]); returns how to change it.
pub(crate) fn init(format: LogFormat, level: &str) -> SetLevel {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level: &str| {
                let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            })
        }};
    }
    match format {
        LogFormat::Text => install!(builder),
        LogFormat::Json => install!(builder.json().flatten_event(true)),
    }
}
