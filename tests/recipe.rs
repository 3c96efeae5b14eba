//! Recipe files: `--print-config` gives a recipe that, edited and passed
//! back with `--config`, runs exactly as the equivalent flags do (same
//! zero pattern, same seed); a report repeats its run; an unknown key is
//! an error naming it.

mod common;
use common::*;

const STEPS: [&str; 10] = [
    "--steps",
    "8",
    "--batch-size",
    "32",
    "--bench-iters",
    "2",
    "--bench-batch",
    "1",
    "--runtime",
    "tract",
];

/// The zero pattern of a report's gates: for each gate, which factors are 0.
fn zeros(report: &serde_json::Value) -> Vec<Vec<bool>> {
    report["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            g["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() == 0.0)
                .collect()
        })
        .collect()
}

fn compress(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["compress"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = run(&all);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn an_edited_printed_recipe_runs_as_the_flags_do() {
    let d = tempfile::tempdir().unwrap();
    let model = fixture("resnet20_fmnist.legacy13.onnx");
    let (m, out_flags, out_cfg) = (
        model.to_str().unwrap(),
        d.path().join("flags.onnx"),
        d.path().join("cfg.onnx"),
    );
    // the run as flags
    let mut args = vec![
        m,
        "-o",
        out_flags.to_str().unwrap(),
        "--target-macs",
        "0.7",
        "--seed",
        "3",
    ];
    args.extend_from_slice(&STEPS);
    let by_flags = compress(&args);

    // the defaults printed, then edited by hand into the same run
    let printed = run(&["compress", m, "--print-config"]);
    assert_eq!(printed.status.code(), Some(0), "{}", stderr(&printed));
    let text = stdout(&printed);
    assert!(text.contains("target_macs = 0.65"), "{text}");
    let edited = text
        .replace("target_macs = 0.65", "target_macs = 0.7")
        .replace("seed = 0", "seed = 3\nbatch_size = 32\nsteps = 8")
        .replace("kind = \"auto\"", "kind = \"tract\"")
        .replace("iters = 200", "iters = 2")
        .replace("batch = [1, 32]", "batch = [1]");
    let edited = format!("output = {:?}\n{edited}", out_cfg.to_str().unwrap());
    let recipe = d.path().join("recipe.toml");
    std::fs::write(&recipe, &edited).unwrap();
    let by_config = compress(&["--config", recipe.to_str().unwrap()]);

    let (a, b) = (zeros(&by_flags), zeros(&by_config));
    assert!(a.iter().flatten().any(|&z| z), "nothing was deleted");
    assert_eq!(a, b, "the recipe ran differently from the flags");
    assert_eq!(by_flags["pruned"]["macs"], by_config["pruned"]["macs"]);

    // the report repeats its own run; a flag over it wins
    let again = d.path().join("again.onnx");
    let repeated = compress(&[
        "--config",
        out_cfg.with_extension("json").to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(zeros(&repeated), b);
    assert_eq!(repeated["pruned"]["file"], again.to_str().unwrap());
    assert_eq!(repeated["recipe"]["train"]["seed"], 3);
}

#[test]
fn an_unknown_recipe_key_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let model = fixture("resnet20_fmnist.legacy13.onnx");
    for (text, key) in [
        ("[train]\nlearning_rate = 0.1\n", "learning_rate"),
        ("target_mac = 0.5\n", "target_mac"),
        ("[preprocess]\nresize_to = 32\n", "resize_to"),
    ] {
        let recipe = d.path().join("bad.toml");
        std::fs::write(&recipe, text).unwrap();
        let o = run(&[
            "compress",
            model.to_str().unwrap(),
            "--config",
            recipe.to_str().unwrap(),
            "--print-config",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(key) && e.contains("bad.toml"), "{e}");
    }
    // a value of the wrong kind names its key too
    let recipe = d.path().join("bad.toml");
    std::fs::write(&recipe, "[train]\nsteps = \"many\"\n").unwrap();
    let o = run(&["compress", "--config", recipe.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("steps"), "{}", stderr(&o));
}

#[test]
fn flags_override_the_recipe() {
    let d = tempfile::tempdir().unwrap();
    let recipe = d.path().join("r.toml");
    std::fs::write(
        &recipe,
        "model = \"m.onnx\"\ntarget_macs = 0.5\n[train]\nlr = 0.02\nseed = 7\n[preprocess]\npad_value = \"mean\"\n",
    )
    .unwrap();
    let o = run(&[
        "compress",
        "--config",
        recipe.to_str().unwrap(),
        "--lr",
        "0.001",
        "--pad-value",
        "black",
        "--print-config",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let back = sss_onnx::compress::recipe::parse(&stdout(&o)).unwrap();
    assert_eq!(back.train.lr, 0.001);
    assert_eq!(back.train.seed, 7);
    assert_eq!(back.target_macs, Some(0.5));
    assert_eq!(
        back.preprocess.pad_value,
        Some(sss_onnx::data::PadValue::Black)
    );
    assert_eq!(back.model.as_deref(), Some(std::path::Path::new("m.onnx")));
    // --gamma alone on the command line is the paper's run without a target
    let o = run(&["compress", "m.onnx", "--gamma", "0.02", "--print-config"]);
    let back = sss_onnx::compress::recipe::parse(&stdout(&o)).unwrap();
    assert_eq!(back.target_macs, None);
    assert!(stdout(&o).contains("target_macs = \"none\""));
}

#[test]
fn the_readme_recipe_is_a_valid_recipe() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("```toml\n")
        .expect("a TOML block in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let o =
        sss_onnx::compress::recipe::parse(&readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.target_macs, Some(0.5));
    assert_eq!(o.train.epochs, Some(1.0));
    assert_eq!(o.runtime.kind, sss_onnx::runtime::Kind::Ort);
}
