//! Least-privilege IAM policies for a connection, and the trust policy of a role assumed with
//! an External ID.
//!
//! A [`Scope`] is a bucket and a root path (prefix) inside it. [`Scope::policy`] gives the
//! identity policy a connector needs there as a [`Role`]:
//!
//! | role | on `arn:aws:s3:::bucket` | on `arn:aws:s3:::bucket/prefix/*` |
//! |---|---|---|
//! | source | `s3:ListBucket` with `s3:prefix` ∈ {`prefix/`, `prefix/*`} | `s3:GetObject` |
//! | sink | the same `s3:ListBucket`, and `s3:ListBucketMultipartUploads` | `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject`, `s3:AbortMultipartUpload`, `s3:ListMultipartUploadParts` |
//!
//! A whole bucket (an empty prefix, or `/`) drops the `s3:prefix` condition and uses
//! `arn:aws:s3:::bucket/*`. `s3:ListBucketMultipartUploads` has its own statement without
//! the condition, because `s3:prefix` is documented for the listing actions
//! `ListBucket`/`ListBucketVersions` only: a condition on a key a request never carries would
//! deny it. Conditional puts (`If-None-Match`) and multipart uploads
//! (`CreateMultipartUpload`, `UploadPart`, `CompleteMultipartUpload`) are all authorized by
//! `s3:PutObject`.
//!
//! [`trust_policy`] is the trust policy that lets one principal assume the role only when it
//! presents the External ID (`sts:AssumeRole` with `StringEquals` on `sts:ExternalId`).
//!
//! Every document is `serde_json::Value` in IAM's policy grammar (`Version` 2012-10-17,
//! `Statement`s with `Sid`, `Effect`, `Action`, `Resource`, `Condition`).
//!
//! ```
//! use s3conn_auth::policy::{Role, Scope, trust_policy};
//!
//! let scope = Scope::new("customer-data", "exports/v1")?;
//! let policy = scope.policy(Role::Source);
//! assert_eq!(policy["Statement"][1]["Resource"], "arn:aws:s3:::customer-data/exports/v1/*");
//! assert_eq!(
//!     policy["Statement"][0]["Condition"]["StringLike"]["s3:prefix"],
//!     serde_json::json!(["exports/v1/", "exports/v1/*"])
//! );
//!
//! let trust = trust_policy("arn:aws:iam::123456789012:role/connector", "tenant-42")?;
//! assert_eq!(trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"], "tenant-42");
//! # Ok::<(), s3conn_auth::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The IAM policy language version every document uses.
pub const POLICY_VERSION: &str = "2012-10-17";

/// What a connector does with its root path: read from it, or write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Lists and reads objects; never writes.
    Source,
    /// Writes, reads back, lists and deletes its own objects; uses multipart uploads and
    /// conditional puts.
    Sink,
}

impl Role {
    /// `source` or `sink`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Sink => "sink",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    /// `source` (also `read`, `reader`) or `sink` (also `write`, `writer`, `destination`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "source" | "read" | "reader" => Ok(Self::Source),
            "sink" | "write" | "writer" | "destination" => Ok(Self::Sink),
            other => Err(Error::InvalidConfig {
                field: "role",
                reason: format!("`{other}`: write `source` or `sink`"),
            }),
        }
    }
}

/// A bucket and the root path inside it that a policy grants access to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    partition: String,
    bucket: String,
    prefix: String,
}

impl Scope {
    /// The bucket and root path (`""` or `"/"` for the whole bucket). Slashes around the
    /// prefix are ignored. The partition is `aws`; see [`Scope::with_partition`].
    pub fn new(bucket: impl Into<String>, prefix: impl AsRef<str>) -> Result<Self> {
        let bucket = bucket.into();
        check_bucket(&bucket)?;
        let prefix = prefix.as_ref().trim_matches('/').to_owned();
        if prefix
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
            && !prefix.is_empty()
        {
            return Err(Error::InvalidConfig {
                field: "prefix",
                reason: format!("`{prefix}` has an empty, `.` or `..` segment"),
            });
        }
        if prefix
            .chars()
            .any(|c| c.is_control() || c == '*' || c == '?')
        {
            return Err(Error::InvalidConfig {
                field: "prefix",
                reason: format!(
                    "`{prefix}` has a control character or an IAM wildcard (`*`, `?`), which would widen the policy"
                ),
            });
        }
        Ok(Self {
            partition: "aws".into(),
            bucket,
            prefix,
        })
    }

    /// The ARN partition: `aws` (default), `aws-cn` (China regions) or `aws-us-gov` (GovCloud).
    pub fn with_partition(mut self, partition: impl Into<String>) -> Self {
        self.partition = partition.into();
        self
    }

    /// The partition a region belongs to: `cn-*` → `aws-cn`, `us-gov-*` → `aws-us-gov`,
    /// anything else `aws`.
    pub fn partition_of_region(region: &str) -> &'static str {
        if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The root path, without slashes around it (`""` for the whole bucket).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `arn:aws:s3:::bucket`.
    pub fn bucket_arn(&self) -> String {
        format!("arn:{}:s3:::{}", self.partition, self.bucket)
    }

    /// `arn:aws:s3:::bucket/prefix/*` (`arn:aws:s3:::bucket/*` for the whole bucket).
    pub fn objects_arn(&self) -> String {
        if self.prefix.is_empty() {
            format!("arn:{}:s3:::{}/*", self.partition, self.bucket)
        } else {
            format!(
                "arn:{}:s3:::{}/{}/*",
                self.partition, self.bucket, self.prefix
            )
        }
    }

    /// The `s3:prefix` values a listing may use: `["prefix/", "prefix/*"]`, none for the
    /// whole bucket.
    pub fn list_prefixes(&self) -> Vec<String> {
        if self.prefix.is_empty() {
            Vec::new()
        } else {
            vec![format!("{}/", self.prefix), format!("{}/*", self.prefix)]
        }
    }

    /// The IAM actions a role needs, on the bucket and on the objects under the root path.
    pub fn actions(role: Role) -> (&'static [&'static str], &'static [&'static str]) {
        match role {
            Role::Source => (&["s3:ListBucket"], &["s3:GetObject"]),
            Role::Sink => (
                &["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                &[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
            ),
        }
    }

    /// The least-privilege identity policy for `role` on this scope.
    pub fn policy(&self, role: Role) -> Value {
        let mut list = json!({
            "Sid": "ListRootPath",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": self.bucket_arn(),
        });
        let prefixes = self.list_prefixes();
        if !prefixes.is_empty()
            && let Some(statement) = list.as_object_mut()
        {
            statement.insert(
                "Condition".into(),
                json!({ "StringLike": { "s3:prefix": prefixes } }),
            );
        }
        let mut statements = vec![list];
        match role {
            Role::Source => statements.push(json!({
                "Sid": "ReadObjects",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": self.objects_arn(),
            })),
            Role::Sink => {
                statements.push(json!({
                    "Sid": "ListMultipartUploads",
                    "Effect": "Allow",
                    "Action": "s3:ListBucketMultipartUploads",
                    "Resource": self.bucket_arn(),
                }));
                let (_, object_actions) = Self::actions(Role::Sink);
                statements.push(json!({
                    "Sid": "ReadWriteObjects",
                    "Effect": "Allow",
                    "Action": object_actions,
                    "Resource": self.objects_arn(),
                }));
            }
        }
        json!({ "Version": POLICY_VERSION, "Statement": statements })
    }
}

/// The trust policy that lets `principal` assume the role only with `external_id`.
///
/// `principal` is an IAM ARN (`arn:aws:iam::123456789012:role/connector`,
/// `…:user/name`, `…:root`) or a 12-digit account id (which means the account's root,
/// `arn:aws:iam::ID:root`).
pub fn trust_policy(principal: &str, external_id: &str) -> Result<Value> {
    let principal = principal_arn(principal)?;
    check_external_id(external_id)?;
    Ok(json!({
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "AssumeWithExternalId",
            "Effect": "Allow",
            "Principal": { "AWS": principal },
            "Action": "sts:AssumeRole",
            "Condition": { "StringEquals": { "sts:ExternalId": external_id } },
        }],
    }))
}

fn principal_arn(principal: &str) -> Result<String> {
    let principal = principal.trim();
    if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("arn:aws:iam::{principal}:root"));
    }
    let parts: Vec<&str> = principal.splitn(6, ':').collect();
    let valid = matches!(
        parts.as_slice(),
        ["arn", partition, "iam" | "sts", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !resource.is_empty()
    );
    if !valid
        || principal
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidConfig {
            field: "principal",
            reason: format!(
                "`{principal}` is not an IAM principal: write an ARN like `arn:aws:iam::123456789012:role/connector` or a 12-digit account id"
            ),
        });
    }
    Ok(principal.to_owned())
}

/// STS's rules for an External ID: 2 to 1224 characters of `[\w+=,.@:/-]`.
fn check_external_id(external_id: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c);
    if !(2..=1224).contains(&external_id.len()) || !external_id.chars().all(allowed) {
        return Err(Error::InvalidConfig {
            field: "external_id",
            reason: "an External ID is 2 to 1224 characters of letters, digits and _+=,.@:/-"
                .into(),
        });
    }
    Ok(())
}

/// S3's bucket naming rules (3–63 lowercase letters, digits, `.` and `-`, starting and ending
/// with a letter or digit), relaxed to allow `_` for older buckets and S3-compatible stores.
fn check_bucket(bucket: &str) -> Result<()> {
    let valid_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c));
    let ends_ok = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&bucket.len()) || !valid_chars || !ends_ok {
        return Err(Error::InvalidConfig {
            field: "bucket",
            reason: format!(
                "`{bucket}` is not a bucket name: 3 to 63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_source_policy() {
        let policy = Scope::new("customer-data", "/landing/events/")
            .unwrap()
            .policy(Role::Source);
        let expected = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ListRootPath",
      "Effect": "Allow",
      "Action": "s3:ListBucket",
      "Resource": "arn:aws:s3:::customer-data",
      "Condition": {
        "StringLike": {
          "s3:prefix": [
            "landing/events/",
            "landing/events/*"
          ]
        }
      }
    },
    {
      "Sid": "ReadObjects",
      "Effect": "Allow",
      "Action": "s3:GetObject",
      "Resource": "arn:aws:s3:::customer-data/landing/events/*"
    }
  ]
}"#;
        assert_eq!(serde_json::to_string_pretty(&policy).unwrap(), expected);
    }

    #[test]
    fn golden_sink_policy() {
        let policy = Scope::new("warehouse", "exports")
            .unwrap()
            .policy(Role::Sink);
        let expected = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ListRootPath",
      "Effect": "Allow",
      "Action": "s3:ListBucket",
      "Resource": "arn:aws:s3:::warehouse",
      "Condition": {
        "StringLike": {
          "s3:prefix": [
            "exports/",
            "exports/*"
          ]
        }
      }
    },
    {
      "Sid": "ListMultipartUploads",
      "Effect": "Allow",
      "Action": "s3:ListBucketMultipartUploads",
      "Resource": "arn:aws:s3:::warehouse"
    },
    {
      "Sid": "ReadWriteObjects",
      "Effect": "Allow",
      "Action": [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts"
      ],
      "Resource": "arn:aws:s3:::warehouse/exports/*"
    }
  ]
}"#;
        assert_eq!(serde_json::to_string_pretty(&policy).unwrap(), expected);
    }

    #[test]
    fn golden_trust_policy() {
        let policy = trust_policy("arn:aws:iam::123456789012:user/connector", "ws-42").unwrap();
        let expected = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "AssumeWithExternalId",
      "Effect": "Allow",
      "Principal": {
        "AWS": "arn:aws:iam::123456789012:user/connector"
      },
      "Action": "sts:AssumeRole",
      "Condition": {
        "StringEquals": {
          "sts:ExternalId": "ws-42"
        }
      }
    }
  ]
}"#;
        assert_eq!(serde_json::to_string_pretty(&policy).unwrap(), expected);
        let root = trust_policy("393309748692", "ws-42").unwrap();
        assert_eq!(
            root["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::393309748692:root"
        );
    }

    #[test]
    fn a_whole_bucket_has_no_prefix_condition() {
        for prefix in ["", "/"] {
            let policy = Scope::new("b-1", prefix).unwrap().policy(Role::Sink);
            let statements = policy["Statement"].as_array().unwrap();
            assert!(statements.iter().all(|s| s.get("Condition").is_none()));
            assert_eq!(statements[2]["Resource"], "arn:aws:s3:::b-1/*");
        }
        let cn = Scope::new("b-1", "p")
            .unwrap()
            .with_partition(Scope::partition_of_region("cn-north-1"));
        assert_eq!(cn.objects_arn(), "arn:aws-cn:s3:::b-1/p/*");
    }

    #[test]
    fn bad_inputs_are_refused_by_name() {
        for (bucket, prefix, field) in [
            ("B", "", "bucket"),
            ("ab", "", "bucket"),
            ("my bucket", "", "bucket"),
            ("bucket", "a/*", "prefix"),
            ("bucket", "a//b", "prefix"),
            ("bucket", "a/../b", "prefix"),
        ] {
            let err = Scope::new(bucket, prefix).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfig { field: f, .. } if *f == field),
                "{bucket} {prefix}: {err}"
            );
        }
        for principal in ["", "bob", "arn:aws:iam::12:root", "arn:aws:s3:::bucket"] {
            let err = trust_policy(principal, "ext-id").unwrap_err();
            assert!(err.to_string().contains("not an IAM principal"), "{err}");
        }
        let err = trust_policy("123456789012", "x").unwrap_err();
        assert!(err.to_string().contains("External ID"), "{err}");
        let err = trust_policy("123456789012", "has space").unwrap_err();
        assert!(err.to_string().contains("External ID"), "{err}");
        assert_eq!("write".parse::<Role>().unwrap(), Role::Sink);
        assert!("admin".parse::<Role>().is_err());
    }
}
