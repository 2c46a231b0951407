//! The README's promises that code can check: the role matrix is the one the service enforces.

use killswitch::auth::{Permission, Role};

#[test]
fn the_readme_role_matrix_is_the_enforced_one_cell_by_cell() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let header = "| permission | analyst | lead | auditor | admin |";
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|line| *line != header)
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    assert_eq!(table.len(), Permission::ALL.len(), "one row per permission");
    for permission in Permission::ALL {
        let row = table
            .iter()
            .find(|line| line.split('|').nth(1).map(str::trim) == Some(permission.describe()))
            .unwrap_or_else(|| panic!("no README row for `{}`", permission.describe()));
        let cells: Vec<&str> = row.split('|').skip(2).take(4).map(str::trim).collect();
        for (role, cell) in Role::ALL.iter().zip(cells) {
            assert_eq!(
                cell == "✓",
                role.allows(permission),
                "{role} × {}: README says {cell}",
                permission.describe()
            );
        }
    }
}

#[test]
fn the_readme_lists_every_problem_type_the_service_answers_and_no_other() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("names the case:")
        .expect("the list of problem types");
    // The list: its bullets, up to the blank line after them.
    let bullets = start + readme[start..].find("\n- ").expect("the bulleted list");
    let end = bullets
        + readme[bullets..]
            .find("\n\n")
            .unwrap_or(readme.len() - bullets);
    let listed: std::collections::BTreeSet<&str> = readme[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| !name.contains('/'))
        .collect();
    let answered: std::collections::BTreeSet<&str> = killswitch::http::problem::ProblemKind::all()
        .map(|k| k.slug())
        .collect();
    assert_eq!(listed, answered);
}
