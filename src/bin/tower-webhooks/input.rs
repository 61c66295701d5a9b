//! The inputs several commands share: the scheme, its secrets, a body and request headers,
//! each from flags, files or stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue};
use tower_webhooks::scheme::{BuiltinScheme, Valohai};
use tower_webhooks::{Secret, SecretSet};

use crate::exit::Failure;

/// `--scheme NAME` or `--valohai FILE.toml`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SchemeArgs {
    /// A built-in scheme: stripe, github, slack, standard (also standard-webhooks, svix),
    /// cerebrium, nextmv.
    #[arg(long, value_name = "NAME", required_unless_present = "valohai")]
    scheme: Option<String>,
    /// A Valohai trigger: a TOML file of conditions (`[[conditions]]`, `[response]`), or any
    /// scheme table tagged by `type`.
    #[arg(long, value_name = "FILE", conflicts_with = "scheme")]
    valohai: Option<PathBuf>,
}

impl SchemeArgs {
    /// The scheme the flags name.
    pub(crate) fn scheme(&self) -> Result<BuiltinScheme, Failure> {
        if let Some(path) = &self.valohai {
            return valohai_file(path);
        }
        let name = self.scheme.as_deref().unwrap_or_default();
        builtin(name)
    }

    /// Whether the secrets may come from the scheme itself (a Valohai condition's `secret`).
    pub(crate) fn secrets_optional(&self) -> bool {
        self.valohai.is_some()
    }
}

/// The built-in scheme called `name`, with its default replay window.
pub(crate) fn builtin(name: &str) -> Result<BuiltinScheme, Failure> {
    let normalised = name.trim().to_ascii_lowercase().replace('-', "_");
    let tag = match normalised.as_str() {
        "standard" | "standardwebhooks" => "standard_webhooks",
        "valohai" => {
            return Err(Failure::usage(
                "a Valohai scheme is a list of conditions: pass it with --valohai FILE.toml",
            ))
        }
        other => other,
    };
    serde_json::from_value(serde_json::json!({ "type": tag })).map_err(|_| {
        Failure::usage(format!(
            "unknown scheme `{name}` (stripe, github, slack, standard, svix, cerebrium, \
             nextmv, or --valohai FILE.toml)"
        ))
    })
}

fn valohai_file(path: &Path) -> Result<BuiltinScheme, Failure> {
    let text = read_file(path)?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    let parsed = if table.contains_key("type") {
        table.try_into::<BuiltinScheme>()
    } else {
        table.try_into::<Valohai>().map(BuiltinScheme::Valohai)
    };
    parsed.map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// `--secret S` / `--secret-env VAR`, each repeatable: the first is the primary secret, more
/// are accepted (and signed with, where the format carries several signatures) during a
/// rotation.
#[derive(Clone, Args)]
pub(crate) struct SecretArgs {
    /// A secret (`{env:VAR}` reads the variable). Prefer --secret-env: arguments are visible
    /// to other users of the machine.
    #[arg(long, value_name = "SECRET")]
    secret: Vec<String>,
    /// The name of an environment variable holding a secret.
    #[arg(long, value_name = "VAR")]
    secret_env: Vec<String>,
}

/// The variables' names, never the secrets given with `--secret`.
impl std::fmt::Debug for SecretArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretArgs")
            .field(
                "secret",
                &vec![tower_webhooks::sensitive::REDACTED; self.secret.len()],
            )
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

impl SecretArgs {
    /// The secrets, `--secret` ones first. Errors never include a secret's value.
    pub(crate) fn secrets(&self, optional: bool) -> Result<SecretSet, Failure> {
        let mut secrets = SecretSet::new();
        for spec in &self.secret {
            secrets
                .push(Secret::resolve(spec).map_err(|e| Failure::usage(format!("--secret: {e}")))?);
        }
        for var in &self.secret_env {
            let value = std::env::var(var)
                .map_err(|_| Failure::usage(format!("--secret-env: {var} is not set")))?;
            if value.is_empty() {
                return Err(Failure::usage(format!("--secret-env: {var} is empty")));
            }
            secrets.push(Secret::new(value));
        }
        if secrets.is_empty() && !optional {
            return Err(Failure::usage(
                "a secret is needed: --secret-env VAR or --secret S",
            ));
        }
        Ok(secrets)
    }
}

/// `--body TEXT` or `--body-file PATH` (`-` reads stdin).
#[derive(Debug, Clone, Args)]
pub(crate) struct BodyArgs {
    /// The body, as given.
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    body: Option<String>,
    /// A file holding the body, byte for byte; `-` reads stdin.
    #[arg(long, value_name = "PATH")]
    body_file: Option<PathBuf>,
}

impl BodyArgs {
    /// The body bytes, or `None` when neither flag is given.
    pub(crate) fn read(&self, stdin: &mut StdinOnce) -> Result<Option<Bytes>, Failure> {
        if let Some(text) = &self.body {
            return Ok(Some(Bytes::from(text.clone())));
        }
        match &self.body_file {
            Some(path) if path.as_os_str() == "-" => stdin.read("--body-file").map(Some),
            Some(path) => std::fs::read(path)
                .map(|bytes| Some(Bytes::from(bytes)))
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display()))),
            None => Ok(None),
        }
    }

    /// Whether stdin is one of the sources.
    pub(crate) fn uses_stdin(&self) -> bool {
        self.body_file
            .as_deref()
            .is_some_and(|p| p.as_os_str() == "-")
    }
}

/// `--header 'Name: value'` (repeatable) and `--headers-file PATH` (`-` reads stdin).
#[derive(Debug, Clone, Args)]
pub(crate) struct HeaderArgs {
    /// A request header, `Name: value`; repeat for more.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A file of headers: `Name: value` lines (a leading request or status line and blank
    /// lines are skipped), or a JSON object of names to values (what `sign --json` prints
    /// under `headers`, or that whole output); `-` reads stdin.
    #[arg(long, value_name = "PATH")]
    headers_file: Option<PathBuf>,
}

impl HeaderArgs {
    /// The headers of the file first, then the flags'.
    pub(crate) fn read(&self, stdin: &mut StdinOnce) -> Result<HeaderMap, Failure> {
        let mut headers = HeaderMap::new();
        if let Some(path) = &self.headers_file {
            let bytes = if path.as_os_str() == "-" {
                stdin.read("--headers-file")?
            } else {
                Bytes::from(read_file(path)?)
            };
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| Failure::usage("--headers-file: not UTF-8 text"))?;
            parse_headers(text, &mut headers)?;
        }
        for line in &self.headers {
            let (name, value) = header_line(line)?.ok_or_else(|| {
                Failure::usage(format!("--header `{line}`: expected `Name: value`"))
            })?;
            headers.append(name, value);
        }
        Ok(headers)
    }

    /// Whether stdin is one of the sources.
    pub(crate) fn uses_stdin(&self) -> bool {
        self.headers_file
            .as_deref()
            .is_some_and(|p| p.as_os_str() == "-")
    }
}

/// Stdin, which only one input may read.
#[derive(Debug, Default)]
pub(crate) struct StdinOnce {
    taken_by: Option<&'static str>,
}

impl StdinOnce {
    fn read(&mut self, flag: &'static str) -> Result<Bytes, Failure> {
        if let Some(other) = self.taken_by.replace(flag) {
            return Err(Failure::usage(format!(
                "{flag} and {other} cannot both read stdin"
            )));
        }
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::usage(format!("{flag}: stdin: {e}")))?;
        Ok(Bytes::from(bytes))
    }
}

fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// Parses a headers file: JSON when it starts with `{`, else `Name: value` lines.
fn parse_headers(text: &str, headers: &mut HeaderMap) -> Result<(), Failure> {
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Failure::usage(format!("--headers-file: {e}")))?;
        let object = value
            .get("headers")
            .unwrap_or(&value)
            .as_object()
            .ok_or_else(|| Failure::usage("--headers-file: expected a JSON object"))?;
        for (name, value) in object {
            let value = value.as_str().ok_or_else(|| {
                Failure::usage(format!("--headers-file: `{name}` is not a string"))
            })?;
            headers.append(header_name(name)?, header_value(name, value)?);
        }
        return Ok(());
    }
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        // A request line (`POST /hook HTTP/1.1`) or status line (`HTTP/1.1 200 OK`), as
        // `curl -D` and proxies write them, carries no header.
        if line.trim().is_empty()
            || ((number == 0 && line.contains(" HTTP/")) || line.starts_with("HTTP/"))
        {
            continue;
        }
        let (name, value) = header_line(line)?.ok_or_else(|| {
            Failure::usage(format!(
                "--headers-file line {}: expected `Name: value`",
                number + 1
            ))
        })?;
        headers.append(name, value);
    }
    Ok(())
}

/// `Name: value`, or `None` without a colon.
fn header_line(line: &str) -> Result<Option<(HeaderName, HeaderValue)>, Failure> {
    let Some((name, value)) = line.split_once(':') else {
        return Ok(None);
    };
    let name = name.trim();
    Ok(Some((
        header_name(name)?,
        header_value(name, value.trim())?,
    )))
}

fn header_name(name: &str) -> Result<HeaderName, Failure> {
    HeaderName::try_from(name).map_err(|_| Failure::usage(format!("`{name}` is not a header name")))
}

/// The value, marked sensitive so that no `Debug` output shows a signature.
fn header_value(name: &str, value: &str) -> Result<HeaderValue, Failure> {
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| Failure::usage(format!("the value of `{name}` is not a header value")))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_files_skip_the_request_line_and_read_json() {
        let mut headers = HeaderMap::new();
        parse_headers(
            "POST /hook HTTP/1.1\r\nStripe-Signature: t=1,v1=ab\r\n\r\n",
            &mut headers,
        )
        .unwrap();
        assert_eq!(headers["stripe-signature"], "t=1,v1=ab");
        let mut headers = HeaderMap::new();
        parse_headers(
            r#"{"scheme":"github","headers":{"x-hub-signature-256":"sha256=00"}}"#,
            &mut headers,
        )
        .unwrap();
        assert_eq!(headers["x-hub-signature-256"], "sha256=00");
        assert!(parse_headers("no colon here", &mut HeaderMap::new()).is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let args = SecretArgs {
            secret: vec!["s3cr3t-value".to_owned()],
            secret_env: vec!["HOOK_SECRET".to_owned()],
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(
            shown.contains("HOOK_SECRET") && shown.contains("[redacted]"),
            "{shown}"
        );
    }

    #[test]
    fn scheme_names_take_dashes_and_aliases() {
        for name in [
            "standard",
            "standard-webhooks",
            "svix",
            "Stripe",
            "github",
            "nextmv",
        ] {
            assert!(builtin(name).is_ok(), "{name}");
        }
        assert!(builtin("stripey").is_err());
        assert!(builtin("valohai").is_err());
    }
}
