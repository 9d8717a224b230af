//! The registry of format plugins: look one up by name, extension or object key.

use std::sync::Arc;

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::plugin::FormatPlugin;

/// Format plugins by name and extension. [`Registry::default`] holds the built-in plugins of
/// the enabled features; a host adds its own with [`Registry::register`].
#[derive(Debug, Clone)]
pub struct Registry {
    /// Later registrations first, so that a host's plugin shadows a built-in one.
    plugins: Vec<Arc<dyn FormatPlugin>>,
}

/// What [`Registry::for_path`] finds for an object key.
#[derive(Debug, Clone)]
pub struct PathMatch {
    /// The plugin for the format.
    pub plugin: Arc<dyn FormatPlugin>,
    /// The compression the key's extension declares (the content may still say otherwise;
    /// see [`crate::compression::detect`]).
    pub compression: Compression,
}

impl Default for Registry {
    fn default() -> Self {
        #[allow(unused_mut)]
        let mut registry = Self::empty();
        #[cfg(feature = "avro")]
        registry.register(Arc::new(crate::avro::AvroFormat::default()));
        #[cfg(feature = "parquet")]
        registry.register(Arc::new(crate::parquet::ParquetFormat::default()));
        #[cfg(feature = "csv")]
        {
            registry.register(Arc::new(crate::csv::CsvFormat::psv()));
            registry.register(Arc::new(crate::csv::CsvFormat::tsv()));
            registry.register(Arc::new(crate::csv::CsvFormat::csv()));
        }
        #[cfg(feature = "json")]
        {
            registry.register(Arc::new(crate::json::JsonFormat));
            registry.register(Arc::new(crate::ndjson::NdjsonFormat));
        }
        registry
    }
}

impl Registry {
    /// A registry with no plugins.
    pub fn empty() -> Self {
        Self {
            plugins: Vec::new(),
        }
    }

    /// Add a plugin. It replaces a plugin of the same name, and shadows earlier plugins that
    /// claim the same extensions.
    pub fn register(&mut self, plugin: Arc<dyn FormatPlugin>) {
        self.plugins.retain(|p| p.name() != plugin.name());
        self.plugins.insert(0, plugin);
    }

    /// Add a plugin, builder style.
    pub fn with(mut self, plugin: Arc<dyn FormatPlugin>) -> Self {
        self.register(plugin);
        self
    }

    /// The plugin registered under `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn FormatPlugin>> {
        self.plugins
            .iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .or_else(|| self.plugin_for_extension(name))
            .cloned()
            .ok_or_else(|| Error::UnknownFormat {
                name: name.to_owned(),
                registered: self.names().join(", "),
            })
    }

    fn plugin_for_extension(&self, ext: &str) -> Option<&Arc<dyn FormatPlugin>> {
        let ext = ext.trim_start_matches('.');
        self.plugins
            .iter()
            .find(|p| p.extensions().iter().any(|e| e.eq_ignore_ascii_case(ext)))
    }

    /// The plugin that claims a file extension (without dot, any case).
    pub fn for_extension(&self, ext: &str) -> Option<Arc<dyn FormatPlugin>> {
        self.plugin_for_extension(ext).cloned()
    }

    /// The plugin and declared compression for an object key, from its extensions:
    /// `a/b.jsonl.gz` is NDJSON, gzip; `a/b.parquet` is Parquet.
    pub fn for_path(&self, key: &str) -> Option<PathMatch> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let mut exts = name.split('.').skip(1).collect::<Vec<_>>();
        let compression = match exts.last().and_then(|e| Compression::from_extension(e)) {
            Some(c) => {
                exts.pop();
                c
            }
            None => Compression::None,
        };
        let plugin = self.for_extension(exts.last()?)?;
        Some(PathMatch {
            plugin,
            compression,
        })
    }

    /// The names of the registered plugins.
    pub fn names(&self) -> Vec<&str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn built_ins_are_found_by_name_extension_and_path() {
        let r = Registry::default();
        assert_eq!(r.get("ndjson").unwrap().name(), "ndjson");
        assert_eq!(r.get("jsonl").unwrap().name(), "ndjson");
        assert_eq!(r.get("Parquet").unwrap().name(), "parquet");
        let m = r.for_path("a/b/c.2024.JSONL.GZ").unwrap();
        assert_eq!(m.plugin.name(), "ndjson");
        assert_eq!(m.compression, Compression::Gzip);
        let m = r.for_path("x.parquet").unwrap();
        assert_eq!(m.plugin.name(), "parquet");
        assert_eq!(m.compression, Compression::None);
        assert!(r.for_path("x.gz").is_none());
        assert!(r.for_path("noext").is_none());
        assert_eq!(
            r.for_path("manifests/1.json").unwrap().plugin.name(),
            "json"
        );
        let m = r.for_path("users/part-00001.AVRO").unwrap();
        assert_eq!(m.plugin.name(), "avro");
        assert_eq!(m.plugin.content_type(), "application/avro");
        assert!(m.plugin.is_self_compressing());
        assert_eq!(r.get("avro").unwrap().extensions(), ["avro"]);
        let err = r.get("xml").unwrap_err().to_string();
        assert!(
            err.contains("registered: ndjson, json, csv, tsv, psv, parquet, avro"),
            "{err}"
        );
    }
}
