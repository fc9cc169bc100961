//! `davit completions SHELL` and `davit man DIR`: shell completions and
//! man pages generated from the clap definitions, so they never drift
//! from the flags (`scripts/setup` installs both).

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::ctx::{Ctx, Failure};

pub fn completions(a: CompletionsArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "davit", &mut std::io::stdout());
    Ok(())
}

pub fn man(ctx: &Ctx, a: ManArgs) -> Result<(), Failure> {
    let io = |what: String| move |e: std::io::Error| Failure::io(anyhow::anyhow!(e).context(what));
    std::fs::create_dir_all(&a.dir).map_err(io(format!("cannot create {}", a.dir.display())))?;
    let cmd = Cli::command();
    let mut pages = vec![(String::from("davit"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("davit-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let mut written = Vec::new();
    for (name, page) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .map_err(io(format!("cannot render the {name} man page")))?;
        let path = a.dir.join(format!("{name}.1"));
        std::fs::write(&path, buf).map_err(io(format!("cannot write {}", path.display())))?;
        written.push(path);
    }
    if ctx.json {
        ctx.print_json(&written);
    } else {
        ctx.term.say(&format!(
            "wrote {} man pages to {}",
            written.len(),
            a.dir.display()
        ));
    }
    Ok(())
}
