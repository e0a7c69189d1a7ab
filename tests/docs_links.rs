//! The user-facing docs link only to files the repository contains.

use std::path::Path;

#[test]
fn docs_link_only_to_files_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("SECURITY.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    assert!(files.iter().any(|f| f.ends_with("docs/behaviour.md")));
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().unwrap().join(target);
            let canonical = resolved
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: link {target:?}: {e}", file.display()));
            assert!(
                canonical.starts_with(root.canonicalize().unwrap()),
                "{}: link {target:?} leaves the repository",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}
