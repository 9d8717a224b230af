//! The shared AWS files, `~/.aws/credentials` and `~/.aws/config`, and named profiles in them.
//!
//! What is read, as the AWS SDKs do:
//! - `[name]` sections of the credentials file and `[profile name]` (or `[default]`) sections
//!   of the config file; the credentials file wins for a key set in both;
//! - `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`, `region`;
//! - `role_arn` with `source_profile` (followed, cycles refused) or
//!   `credential_source = Environment | Ec2InstanceMetadata | EcsContainer`, with
//!   `external_id`, `role_session_name`, `duration_seconds`.
//!
//! `credential_process` and SSO settings are refused with a message that says so: they would
//! run programs or open browsers, which a library should not do behind a host's back.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the shared files are: `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`, else
/// `~/.aws/credentials` and `~/.aws/config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProfileFiles {
    pub(crate) credentials: Option<PathBuf>,
    pub(crate) config: Option<PathBuf>,
}

impl ProfileFiles {
    /// The files named by these settings, else the default locations under `home`.
    pub(crate) fn resolve(
        credentials: Option<PathBuf>,
        config: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> Self {
        let aws = home.map(|h| h.join(".aws"));
        Self {
            credentials: credentials.or_else(|| aws.as_ref().map(|a| a.join("credentials"))),
            config: config.or_else(|| aws.as_ref().map(|a| a.join("config"))),
        }
    }

    fn describe(&self) -> String {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| format!("`{}`", p.display()))
                .unwrap_or_else(|| "(none)".into())
        };
        format!("{} and {}", show(&self.credentials), show(&self.config))
    }

    /// All profiles of both files: name → settings.
    pub(crate) fn load(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let mut profiles: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if let Some(text) = read_optional(self.config.as_deref())? {
            for (section, settings) in parse_ini(&text) {
                let name = match section.strip_prefix("profile ") {
                    Some(name) => name.trim().to_owned(),
                    None if section == "default" => section,
                    // `[sso-session x]`, `[services x]` and unprefixed names are not profiles
                    // in the config file.
                    None => continue,
                };
                profiles.entry(name).or_default().extend(settings);
            }
        }
        if let Some(text) = read_optional(self.credentials.as_deref())? {
            for (section, settings) in parse_ini(&text) {
                profiles.entry(section).or_default().extend(settings);
            }
        }
        Ok(profiles)
    }
}

fn read_optional(path: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Profile {
            profile: String::new(),
            reason: format!("cannot read `{}`: {e}", path.display()),
        }),
    }
}

/// Sections and their `key = value` settings. Comments (`#`, `;`) and indented
/// sub-settings (`s3 =` blocks) are skipped; keys are lowercased.
fn parse_ini(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut sections: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for raw in text.lines() {
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), BTreeMap::new()));
            continue;
        }
        if let (Some((key, value)), Some((_, settings))) =
            (line.split_once('='), sections.last_mut())
        {
            let value = value.trim();
            // An inline comment needs a space before it, as in the SDKs.
            let value = value
                .split_once(" #")
                .or_else(|| value.split_once(" ;"))
                .map(|(v, _)| v.trim_end())
                .unwrap_or(value);
            settings.insert(key.trim().to_ascii_lowercase(), value.to_owned());
        }
    }
    sections
}

/// What a profile resolves to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum ProfileCredentials {
    /// Keys written in the profile.
    Static {
        key_id: String,
        secret_key: String,
        token: Option<String>,
    },
    /// A role assumed with the credentials of `base`.
    AssumeRole {
        base: Box<ProfileCredentials>,
        role_arn: String,
        external_id: Option<String>,
        session_name: Option<String>,
        duration_secs: Option<u64>,
    },
    /// `credential_source = Environment`.
    Environment,
    /// `credential_source = Ec2InstanceMetadata | EcsContainer`: object_store's providers.
    Platform,
}

impl std::fmt::Debug for ProfileCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static { key_id, .. } => f
                .debug_struct("Static")
                .field("key_id", key_id)
                .finish_non_exhaustive(),
            Self::AssumeRole { base, role_arn, .. } => f
                .debug_struct("AssumeRole")
                .field("role_arn", role_arn)
                .field("base", base)
                .finish_non_exhaustive(),
            Self::Environment => f.write_str("Environment"),
            Self::Platform => f.write_str("Platform"),
        }
    }
}

/// A resolved profile: its credentials and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) credentials: ProfileCredentials,
    pub(crate) region: Option<String>,
}

/// Resolve `name`. `Ok(None)`: no such profile in the files (or no files).
pub(crate) fn resolve(files: &ProfileFiles, name: &str) -> Result<Option<Profile>> {
    let profiles = files.load().map_err(|e| match e {
        Error::Profile { reason, .. } => Error::Profile {
            profile: name.to_owned(),
            reason,
        },
        other => other,
    })?;
    if !profiles.contains_key(name) {
        return Ok(None);
    }
    let mut seen = HashSet::new();
    let credentials = credentials_of(&profiles, name, &mut seen, files)?;
    let region = profiles.get(name).and_then(|p| p.get("region")).cloned();
    Ok(Some(Profile {
        credentials,
        region,
    }))
}

fn credentials_of(
    profiles: &BTreeMap<String, BTreeMap<String, String>>,
    name: &str,
    seen: &mut HashSet<String>,
    files: &ProfileFiles,
) -> Result<ProfileCredentials> {
    let error = |reason: String| Error::Profile {
        profile: name.to_owned(),
        reason,
    };
    let Some(settings) = profiles.get(name) else {
        return Err(error(format!("no such profile in {}", files.describe())));
    };
    if !seen.insert(name.to_owned()) {
        return Err(error(
            "`source_profile` chains back to this profile: break the cycle".into(),
        ));
    }
    for unsupported in [
        "credential_process",
        "sso_start_url",
        "sso_session",
        "web_identity_token_file",
    ] {
        if settings.contains_key(unsupported) {
            return Err(error(format!(
                "`{unsupported}` is not supported by s3conn: give keys, a `role_arn` with a `source_profile`, or use the default chain (AWS_WEB_IDENTITY_TOKEN_FILE in the environment is supported)"
            )));
        }
    }
    let static_keys = match (
        settings.get("aws_access_key_id"),
        settings.get("aws_secret_access_key"),
    ) {
        (Some(key_id), Some(secret_key)) => Some(ProfileCredentials::Static {
            key_id: key_id.clone(),
            secret_key: secret_key.clone(),
            token: settings.get("aws_session_token").cloned(),
        }),
        (Some(_), None) => {
            return Err(error(
                "`aws_access_key_id` without `aws_secret_access_key`".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(error(
                "`aws_secret_access_key` without `aws_access_key_id`".into(),
            ));
        }
        (None, None) => None,
    };
    let Some(role_arn) = settings.get("role_arn") else {
        return static_keys.ok_or_else(|| {
            error(format!(
                "it has neither keys (`aws_access_key_id`, `aws_secret_access_key`) nor a `role_arn` (in {})",
                files.describe()
            ))
        });
    };
    let base = match (
        settings.get("source_profile"),
        settings.get("credential_source"),
    ) {
        (Some(_), Some(_)) => {
            return Err(error(
                "`source_profile` and `credential_source` both given; keep one".into(),
            ));
        }
        // A profile that names itself as its source uses its own keys.
        (Some(source), None) if source == name => static_keys.ok_or_else(|| {
            error("`source_profile` names this profile, which has no keys".into())
        })?,
        (Some(source), None) => credentials_of(profiles, source, seen, files)?,
        (None, Some(source)) => match source.as_str() {
            "Environment" => ProfileCredentials::Environment,
            "Ec2InstanceMetadata" | "EcsContainer" => ProfileCredentials::Platform,
            other => {
                return Err(error(format!(
                    "`credential_source = {other}`: write Environment, Ec2InstanceMetadata or EcsContainer"
                )));
            }
        },
        (None, None) => {
            return Err(error(
                "`role_arn` needs a `source_profile` or a `credential_source`".into(),
            ));
        }
    };
    let duration_secs = settings
        .get("duration_seconds")
        .map(|d| {
            d.parse::<u64>().map_err(|_| {
                error(format!(
                    "`duration_seconds = {d}` is not a number of seconds"
                ))
            })
        })
        .transpose()?;
    Ok(ProfileCredentials::AssumeRole {
        base: Box::new(base),
        role_arn: role_arn.clone(),
        external_id: settings.get("external_id").cloned(),
        session_name: settings.get("role_session_name").cloned(),
        duration_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(credentials: &str, config: &str) -> (tempfile::TempDir, ProfileFiles) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("credentials"), credentials).unwrap();
        std::fs::write(dir.path().join("config"), config).unwrap();
        let files = ProfileFiles::resolve(
            Some(dir.path().join("credentials")),
            Some(dir.path().join("config")),
            None,
        );
        (dir, files)
    }

    #[test]
    fn static_keys_and_regions_are_read() {
        let (_dir, files) = files(
            "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n[prod]\naws_access_key_id=AKIAPROD\naws_secret_access_key=s2 ; trailing\naws_session_token = tok\n",
            "[default]\nregion = us-east-2\n[profile prod]\nregion = eu-west-1\ns3 =\n  max_concurrent_requests = 10\n[sso-session x]\nsso_region = x\n",
        );
        let p = resolve(&files, "prod").unwrap().unwrap();
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            p.credentials,
            ProfileCredentials::Static {
                key_id: "AKIAPROD".into(),
                secret_key: "s2".into(),
                token: Some("tok".into())
            }
        );
        assert!(!format!("{p:?}").contains("s2"));
        let d = resolve(&files, "default").unwrap().unwrap();
        assert_eq!(d.region.as_deref(), Some("us-east-2"));
        assert!(resolve(&files, "missing").unwrap().is_none());
    }

    #[test]
    fn roles_follow_source_profiles() {
        let (_dir, files) = files(
            "[base]\naws_access_key_id = AKIABASE\naws_secret_access_key = s\n",
            "[profile connector]\nrole_arn = arn:aws:iam::123456789012:role/c\nsource_profile = base\nexternal_id = ext-1\nrole_session_name = sess\nduration_seconds = 900\n[profile loop-a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = loop-b\n[profile loop-b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = loop-a\n[profile proc]\ncredential_process = /bin/echo\n[profile env]\nrole_arn = arn:aws:iam::1:role/e\ncredential_source = Environment\n",
        );
        let p = resolve(&files, "connector").unwrap().unwrap();
        match p.credentials {
            ProfileCredentials::AssumeRole {
                base,
                role_arn,
                external_id,
                session_name,
                duration_secs,
            } => {
                assert!(matches!(*base, ProfileCredentials::Static { .. }));
                assert_eq!(role_arn, "arn:aws:iam::123456789012:role/c");
                assert_eq!(external_id.as_deref(), Some("ext-1"));
                assert_eq!(session_name.as_deref(), Some("sess"));
                assert_eq!(duration_secs, Some(900));
            }
            other => panic!("{other:?}"),
        }
        let err = resolve(&files, "loop-a").unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        let err = resolve(&files, "proc").unwrap_err().to_string();
        assert!(err.contains("credential_process"), "{err}");
        let p = resolve(&files, "env").unwrap().unwrap();
        assert!(matches!(
            p.credentials,
            ProfileCredentials::AssumeRole { ref base, .. } if **base == ProfileCredentials::Environment
        ));
    }

    #[test]
    fn missing_files_mean_no_profile() {
        let files = ProfileFiles {
            credentials: Some("/nonexistent/credentials".into()),
            config: None,
        };
        assert!(resolve(&files, "default").unwrap().is_none());
    }
}
