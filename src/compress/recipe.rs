//! Recipe files: `compress`'s options as TOML, read strictly (an unknown
//! key is an error naming it) and written back complete. A report (JSON)
//! holds the recipe it ran with under `recipe`, so it reads as one too.

use super::Options;
use crate::error::{Error, Result};
use std::path::Path;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Recipe {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a recipe: TOML, or the JSON report of an earlier run.
pub fn load(path: &Path) -> Result<Options> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
        let recipe = v.get("recipe").cloned().unwrap_or(v);
        return serde_json::from_value(recipe).map_err(|e| bad(path, e.to_string()));
    }
    parse(&text).map_err(|reason| bad(path, reason))
}

/// Parses recipe text; the error names the key or value at fault.
pub fn parse(text: &str) -> std::result::Result<Options, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
}

/// The recipe as TOML, every option that has a value written out.
pub fn to_toml(o: &Options) -> String {
    // every field of Options serialises (paths, numbers, strings, tables)
    toml::to_string(o).unwrap_or_else(|e| format!("# the recipe could not be written: {e}\n"))
}
