//! Runs a shell command in a lab guest: `lab_run TOPOLOGY COMMAND...`. A development aid;
//! the real entry point is `p2pmem lab run`. The example binary itself must be static
//! (it is copied into the guest as /bin/p2pmem).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topo = p2pmem_lab::Topology::load(&args.next().unwrap_or_else(|| "default".into()))?;
    let cmd: Vec<String> = args.collect();
    let lab = p2pmem_lab::Lab::from_env()?;
    let job = p2pmem_lab::Job {
        script: p2pmem_lab::lab::job_from_argv(&cmd),
        fetch_dirs: vec![],
    };
    let out = lab.run(&topo, None, &job)?;
    use std::io::Write;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    eprintln!(
        "exit {} init {:?} qemu {:.1}s",
        out.exit_code, out.init_secs, out.qemu_secs
    );
    std::process::exit(out.exit_code);
}
