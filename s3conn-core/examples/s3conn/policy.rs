//! `s3conn policy`: the least-privilege IAM policy a connector needs on a bucket and root
//! path, and the trust policy of a role assumed with an External ID.
//!
//! ```text
//! s3conn policy --role source --bucket customer-data --prefix landing
//!     → the IAM policy (paste-ready)
//! s3conn policy --role sink --bucket b --prefix p --external-id X --principal ARN
//!     → {"policy": {…}, "trust_policy": {…}}; `--only policy|trust` prints one of them alone
//! ```

use clap::Args;
use s3conn_core::auth::policy::{Role, Scope, trust_policy};
use serde_json::{Value, json};

/// Arguments of `s3conn policy`.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// What the connector does there: source (list and read) or sink (write, read back,
    /// delete, multipart).
    #[arg(long)]
    role: Role,
    /// The bucket.
    #[arg(long)]
    bucket: String,
    /// The root path inside the bucket (none, or `/`, for the whole bucket).
    #[arg(long, default_value = "")]
    prefix: String,
    /// The bucket's region: picks the ARN partition (cn-* → aws-cn, us-gov-* → aws-us-gov).
    #[arg(long)]
    region: Option<String>,
    /// The External ID the role's trust policy requires: also print the trust policy.
    #[arg(long, requires = "principal")]
    external_id: Option<String>,
    /// Who may assume the role: an IAM ARN or a 12-digit account id.
    #[arg(long, requires = "external_id")]
    principal: Option<String>,
    /// Print only one document, paste-ready: policy or trust.
    #[arg(long, value_parser = ["policy", "trust"])]
    only: Option<String>,
}

/// The JSON to print, or a message for stderr (exit 2).
pub(crate) fn run(args: PolicyArgs) -> Result<Value, String> {
    let mut scope = Scope::new(&args.bucket, &args.prefix).map_err(|e| e.to_string())?;
    if let Some(region) = &args.region {
        scope = scope.with_partition(Scope::partition_of_region(region));
    }
    let policy = scope.policy(args.role);
    let trust = match (&args.external_id, &args.principal) {
        (Some(external_id), Some(principal)) => {
            Some(trust_policy(principal, external_id).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    match (args.only.as_deref(), trust) {
        (Some("trust"), None) => Err("--only trust needs --external-id and --principal".into()),
        (Some("trust"), Some(trust)) => Ok(trust),
        (Some(_), _) | (None, None) => Ok(policy),
        (None, Some(trust)) => Ok(json!({ "policy": policy, "trust_policy": trust })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PolicyArgs,
    }

    fn policy(argv: &[&str]) -> Result<Value, String> {
        let mut all = vec!["policy"];
        all.extend_from_slice(argv);
        run(Cli::try_parse_from(all).map_err(|e| e.to_string())?.args)
    }

    #[test]
    fn prints_the_library_documents() {
        let source = policy(&[
            "--role", "source", "--bucket", "data", "--prefix", "landing/",
        ])
        .unwrap();
        assert_eq!(
            source,
            Scope::new("data", "landing").unwrap().policy(Role::Source)
        );
        let sink = policy(&["--role", "sink", "--bucket", "data"]).unwrap();
        assert_eq!(sink["Statement"][2]["Resource"], "arn:aws:s3:::data/*");
        let cn = policy(&[
            "--role",
            "sink",
            "--bucket",
            "data",
            "--region",
            "cn-north-1",
        ])
        .unwrap();
        assert_eq!(cn["Statement"][0]["Resource"], "arn:aws-cn:s3:::data");

        let both = policy(&[
            "--role",
            "sink",
            "--bucket",
            "data",
            "--prefix",
            "exports",
            "--external-id",
            "tenant-42",
            "--principal",
            "arn:aws:iam::123456789012:role/connector",
        ])
        .unwrap();
        assert_eq!(
            both["policy"],
            Scope::new("data", "exports").unwrap().policy(Role::Sink)
        );
        assert_eq!(
            both["trust_policy"]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
            "tenant-42"
        );
        let trust = policy(&[
            "--role",
            "source",
            "--bucket",
            "data",
            "--external-id",
            "tenant-42",
            "--principal",
            "123456789012",
            "--only",
            "trust",
        ])
        .unwrap();
        assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let err = policy(&["--role", "admin", "--bucket", "data"]).unwrap_err();
        assert!(err.contains("source") && err.contains("sink"), "{err}");
        let err = policy(&["--role", "source", "--bucket", "Data"]).unwrap_err();
        assert!(err.contains("bucket name"), "{err}");
        let err = policy(&[
            "--role",
            "source",
            "--bucket",
            "data",
            "--external-id",
            "x1",
        ])
        .unwrap_err();
        assert!(err.contains("--principal"), "{err}");
        let err = policy(&[
            "--role",
            "source",
            "--bucket",
            "data",
            "--external-id",
            "x1",
            "--principal",
            "bob",
        ])
        .unwrap_err();
        assert!(err.contains("IAM principal"), "{err}");
        let err = policy(&["--role", "source", "--bucket", "data", "--only", "trust"]).unwrap_err();
        assert!(err.contains("--external-id"), "{err}");
    }
}
