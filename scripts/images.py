"""Build the job images, check them by running real steps inside them, push them, and register them with Batch.

    python scripts/images.py build [--only NAME ...] [--builder auto|docker|buildah] [--tag TAG]
                                   [--regenie source|DIR]
    python scripts/images.py check [--only NAME ...] [--builder ...] [--tag TAG] [--compare-host]
    python scripts/images.py push --registry ACCOUNT.dkr.ecr.REGION.amazonaws.com/PREFIX [--tag TAG]
    python scripts/images.py register --registry ... [--tag TAG] [--region R]

``./dev images`` runs ``build`` (and ``check`` with --check). The images (README, "Job images"):
    genomics-rnaseq, genomics-germline, genomics-ingest   docker/steps/Dockerfile, PIPELINE=<name>
    genomics-gwas                                         docker/gwas/Dockerfile (regenie + plink2)
Each is tagged with the git commit (``<12 hex>``, ``-dirty`` when the tree has changes) and ``local`` (the
tag the local backend runs with GENOMICS_LOCAL_CONTAINERS=buildah).

Builders: docker where a daemon answers, else buildah (daemonless, ``--isolation chroot``). The Debian base
(debian:bookworm-slim) is pulled when a registry can be reached; otherwise it is made here from Debian's own
packages with debootstrap and imported with podman, and named ``localhost/debian-bookworm-debootstrap``.

regenie: ``--regenie source`` compiles it from its public source (docker/gwas/regenie.Dockerfile, ~30 min on 2
cores, needs github.com); ``--regenie DIR`` takes a regenie binary (and its LICENSE) from DIR, built from the same
release, e.g. ../shared/tools/regenie in this project's CI, which cannot reach GitHub.

``check`` runs, inside each image, real steps on the synthetic data the demo uses and checks their science
(rnaseq: salmon's abundances against the simulated truth; germline: recall of the planted SNVs; gwas: the planted
causal variant ranks first, with plink2; ingest: its tools start). With ``--compare-host`` it also runs the same
steps as host processes (the local backend's default) and requires the same tool versions and the same results.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]

from genomics_steps import synthetic, synthetic_gwas  # noqa: E402

IMAGES = {  # image name -> (Dockerfile, build args)
    "rnaseq": ("docker/steps/Dockerfile", {"PIPELINE": "rnaseq"}),
    "germline": ("docker/steps/Dockerfile", {"PIPELINE": "germline"}),
    "ingest": ("docker/steps/Dockerfile", {"PIPELINE": "ingest"}),
    "gwas": ("docker/gwas/Dockerfile", {}),
}
OFFICIAL_BASE = "docker.io/library/debian:bookworm-slim"
MADE_BASE = "localhost/debian-bookworm-debootstrap:latest"
REGENIE_IMAGE = "localhost/genomics-regenie:v4.1.2"
LOCAL_TAG = "local"
DEBIAN_SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kwargs)


def git_tag() -> str:
    """The commit the images are built from; ``-dirty`` when tracked files differ from it."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--"]).returncode != 0
    return f"{commit}-dirty" if dirty else commit


def pick_builder(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0:
        return "docker"
    if shutil.which("buildah"):
        return "buildah"
    raise SystemExit("no image builder: start a docker daemon, or install buildah (./dev images installs it as root)")


def has_image(builder: str, ref: str) -> bool:
    argv = ["docker", "image", "inspect", ref] if builder == "docker" else ["buildah", "inspect", "--type",
                                                                           "image", ref]
    return subprocess.run(argv, capture_output=True).returncode == 0


def debian_base(builder: str) -> str:
    """debian:bookworm-slim, pulled if a registry answers, else made here with debootstrap (buildah only)."""
    for ref in (OFFICIAL_BASE, MADE_BASE):
        if has_image(builder, ref):
            return ref
    pull = ["docker", "pull", OFFICIAL_BASE] if builder == "docker" else ["buildah", "pull", OFFICIAL_BASE]
    if subprocess.run(pull, capture_output=True, timeout=600).returncode == 0:
        return OFFICIAL_BASE
    if builder != "buildah" or not shutil.which("debootstrap"):
        raise SystemExit(f"cannot pull {OFFICIAL_BASE} and cannot make it here (needs buildah and debootstrap)")
    log(f"{OFFICIAL_BASE} cannot be pulled: making the Debian base with debootstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"],
            stdout=subprocess.DEVNULL)
        # as the official image: updates and security suites, no package cache, deb822 sources
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(DEBIAN_SOURCES)
        for leftover in [*(rootfs / "var/cache/apt/archives").glob("*.deb"), *(rootfs / "var/lib/apt/lists").glob("*_*")]:
            leftover.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["podman", "import", "--change", 'CMD ["bash"]', "-", MADE_BASE], stdin=tar.stdout,
            stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("packing the debootstrap root file system failed")
    return MADE_BASE


def build_argv(builder: str, dockerfile: str, tags: list[str], args: dict[str, str],
               contexts: dict[str, str]) -> list[str]:
    if builder == "docker":
        argv = ["docker", "build", "-f", dockerfile]
    else:  # daemonless; layers kept so a second build reuses them; never reach for a registry
        argv = ["buildah", "bud", "--isolation", "chroot", "--layers", "--pull=never", "-f", dockerfile]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for name, value in contexts.items():
        argv += ["--build-context", f"{name}={value}"]
    for tag in tags:
        argv += ["-t", tag]
    return [*argv, str(ROOT)]


def regenie_context(builder: str, regenie: str, base: str) -> str:
    """The build context docker/gwas/Dockerfile copies regenie from: a folder with a prebuilt binary, or the
    image docker/gwas/regenie.Dockerfile compiles from source."""
    if regenie != "source":
        folder = Path(regenie).resolve()
        if not (folder / "regenie").is_file():
            raise SystemExit(f"--regenie {regenie!r}: no regenie binary in {folder}")
        return str(folder)
    if not has_image(builder, REGENIE_IMAGE):
        log("compiling regenie from source (docker/gwas/regenie.Dockerfile; about 30 minutes on 2 cores)")
        run(build_argv(builder, "docker/gwas/regenie.Dockerfile", [REGENIE_IMAGE], {"BASE": base}, {}), cwd=ROOT)
    return f"docker-image://{REGENIE_IMAGE}"


# pyarrow in the rnaseq image: the newest release line that imports beside Debian bookworm's NumPy 1.24, which
# the image's MultiQC and matplotlib are built for (pyarrow 26, the host's, requires NumPy 2). The matrices'
# Parquet files are written through pyarrow's table writer, the same in both.
IMAGE_PYARROW = "17.0.0"


def wheels_context(name: str, work: Path) -> tuple[str, dict[str, str]]:
    """The "wheels" build context of a steps image and its build args: rnaseq's holds the pyarrow wheel (Debian
    bookworm has no pyarrow), downloaded by the host's pip, which knows how this machine reaches PyPI (inside a
    build, pip would not); the others an empty folder."""
    folder = work / f"wheels-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    if name != "rnaseq":
        return str(folder), {}
    version = IMAGE_PYARROW
    machine = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[os.uname().machine]
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", "--platform", f"manylinux_2_28_{machine}",
         "--platform", f"manylinux_2_17_{machine}", "--platform", f"manylinux2014_{machine}", "-d", str(folder),
         f"pyarrow=={version}"])
    return str(folder), {"PYARROW_VERSION": version}


def build(names: list[str], builder: str, tag: str, regenie: str) -> dict[str, float]:
    base = debian_base(builder)
    seconds = {}
    work = Path(tempfile.mkdtemp(prefix="images-build-"))
    for name in names:
        dockerfile, args = IMAGES[name]
        contexts = {"regenie": regenie_context(builder, regenie, base)} if name == "gwas" else {}
        if dockerfile == "docker/steps/Dockerfile":
            contexts["wheels"], extra = wheels_context(name, work)
            args = {**args, **extra}
        started = time.monotonic()
        log(f"building genomics-{name}:{tag} with {builder} from {dockerfile} on {base}")
        run(build_argv(builder, dockerfile, [f"genomics-{name}:{tag}", f"genomics-{name}:{LOCAL_TAG}"],
                       {**args, "BASE": base, "IMAGE_TAG": tag}, contexts), cwd=ROOT)
        seconds[name] = round(time.monotonic() - started, 1)
    shutil.rmtree(work, ignore_errors=True)
    return seconds


# --- running steps in an image and on the host ---------------------------------------------------------------


@dataclass
class Runner:
    """Runs step commands of one pipeline either as host processes (where="host") or inside its image."""

    where: str  # "host" or an image reference
    builder: str
    work: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, command: list[str], **env: str) -> None:
        job_env = {"LANG": "C.UTF-8", "TMPDIR": str(self.work / "tmp"), **self.env, **env}
        (self.work / "tmp").mkdir(parents=True, exist_ok=True)
        if self.where == "host":
            full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
                    "PYTHONPATH": str(ROOT / "include"), **job_env}
            argv = [sys.executable, *command[1:]] if command[0] == "python3" else command
            result = subprocess.run(argv, env=full, cwd=self.work, capture_output=True, text=True)
        elif self.builder == "docker":
            argv = ["docker", "run", "--rm", "-u", f"{os.getuid()}:{os.getgid()}", "-w", str(self.work)]
            for path in self.mounts():
                argv += ["-v", f"{path}:{path}"]
            for key, value in job_env.items():
                argv += ["-e", f"{key}={value}"]
            result = subprocess.run([*argv, self.where, *command], capture_output=True, text=True)
        else:
            spec = {"image": self.where, "env": job_env, "mounts": self.mounts(), "workdir": str(self.work),
                    "user": f"{os.getuid()}:{os.getgid()}"}
            spec_file = self.work / "container.json"
            spec_file.write_text(json.dumps(spec))
            result = subprocess.run([sys.executable, "-m", "local_batch.containers", str(spec_file), "--", *command],
                                    env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")}, capture_output=True,
                                    text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed in {self.where} (exit {result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def mounts(self) -> list[str]:
        return [str(self.work)]


def _metrics(lake: Path, *parts: str) -> dict:
    return json.loads((lake.joinpath(*parts) / "metrics.json").read_text())


def run_rnaseq(runner: Runner) -> dict:
    """salmon index, fastp and salmon quant of one synthetic sample; returns what a comparison needs."""
    lake = runner.work / "lake"
    synthetic.write_reference(lake.as_uri(), "synthetic-v1")
    synthetic.write_sample(lake.as_uri(), "check", "synthetic-v1", "S1", "rnaseq")
    runner.env.update(GENOMICS_LAKE_URI=lake.as_uri(), GENOMICS_PROJECT="check", GENOMICS_PIPELINE="rnaseq")
    module = ["python3", "-m", "genomics_steps.rnaseq"]
    runner([*module, "salmon-index", "--reference", "synthetic-v1"])
    runner([*module, "fastp", "--pipeline-version", "check"], GENOMICS_SAMPLE="S1")
    runner([*module, "salmon-quant", "--pipeline-version", "check", "--reference", "synthetic-v1"],
           GENOMICS_SAMPLE="S1")
    runner([*module, "merge", "--pipeline-version", "check", "--reference", "synthetic-v1"])  # pyarrow, numpy
    matrices = lake / "results/rnaseq/check/project=check/matrices"
    sample = lake / "results/rnaseq/check/project=check/sample=S1"
    quant = {}
    for line in (sample / "salmon_quant/quant.sf").read_text().splitlines()[1:]:
        name, _, _, tpm, _ = line.split("\t")
        quant[name] = float(tpm)
    return {
        "tools": {**_metrics(sample, "fastp")["tools"], **_metrics(sample, "salmon_quant")["tools"]},
        "fastp": _metrics(sample, "fastp")["metrics"],
        "tpm": quant,
        "spearman": synthetic.quantification_spearman(lake.as_uri(), "check", "S1", quant),
        "matrices": sorted(p.name for p in matrices.iterdir() if p.suffix in (".tsv", ".parquet")),
    }


def run_germline(runner: Runner) -> dict:
    """bwa index, bwa mem, markdup and call of one synthetic sample with planted SNVs."""
    lake = runner.work / "lake"
    synthetic.write_reference(lake.as_uri(), "synthetic-v1")
    synthetic.write_sample(lake.as_uri(), "check", "synthetic-v1", "S1", "germline")
    runner.env.update(GENOMICS_LAKE_URI=lake.as_uri(), GENOMICS_PROJECT="check", GENOMICS_PIPELINE="germline")
    module = ["python3", "-m", "genomics_steps.germline"]
    runner([*module, "bwa-index", "--reference", "synthetic-v1"])
    for step in ("bwa-mem", "markdup", "call"):
        extra = ["--reference", "synthetic-v1"] if step in ("bwa-mem", "call") else []
        runner([*module, step, "--pipeline-version", "check", *extra], GENOMICS_SAMPLE="S1")
    sample = lake / "results/germline/check/project=check/sample=S1"
    with gzip.open(sample / "call/calls.vcf.gz", "rt") as vcf:  # BGZF is gzip: no bcftools needed on the host
        records = [line.rstrip("\n") for line in vcf if not line.startswith("#")]
    called = {(f[0], int(f[1]), f[3], f[4]) for f in (r.split("\t") for r in records)}
    tools = {}
    for step in ("bwa_mem", "markdup", "call"):
        tools.update(_metrics(sample, step)["tools"])
    return {"tools": tools, "records": records,
            "recall": synthetic.snv_recall(lake.as_uri(), "check", "S1", called)}


def run_gwas(runner: Runner) -> dict:
    """plink2 association of the synthetic cohort: step 1 (chunk plan), every step-2 chunk, the merge."""
    lake = runner.work / "lake"
    truth = synthetic_gwas.write_cohort(lake.as_uri(), "check", samples=600)
    fsx = runner.work / "fsx"
    (fsx / "output").mkdir(parents=True, exist_ok=True)
    runner.env.update(GENOMICS_LAKE_URI=lake.as_uri(), GENOMICS_PROJECT="check", GENOMICS_PIPELINE="regenie_gwas",
                      GENOMICS_RUN_ID="images-check", GENOMICS_DAG_ID="regenie_gwas",
                      GENOMICS_FSX=json.dumps({"file_system_id": "fs-local", "mount": str(fsx),
                                               "output": str(fsx / "output"), "links": {}}))
    gwas = f"{lake.as_uri()}/raw/check/gwas/"
    args = ["--engine", "plink2", "--genotypes", gwas + "cohort", "--phenotypes", gwas + "phenotypes.tsv",
            "--covariates", gwas + "covariates.tsv", "--traits", "trait_a,trait_b", "--pipeline-version", "check",
            "--variants-per-job", "1000"]
    module = ["python3", "-m", "genomics_steps.gwas"]
    runner([*module, "step1", *args])
    plan = json.loads((fsx / "output/step1/chunks.json").read_text())
    for chunk in plan["chunks"]:
        runner([*module, "step2", *args], GENOMICS_SAMPLE=chunk["id"])
    runner([*module, "merge", *args])
    top = json.loads((fsx / "output/associations/top_hits.json").read_text())
    return {"tools": _metrics(fsx / "output", "associations")["tools"], "truth": truth,
            "top": {trait: hits[0] for trait, hits in top.items()}, "top_hits": top}


def run_ingest(runner: Runner) -> dict:
    """The ingest image's tools start and report their versions (its steps need NCBI or its local mirror)."""
    out = {}
    for tool, argv in {"fasterq-dump": ["fasterq-dump", "--version"], "fastp": ["fastp", "--version"],
                       "multiqc": ["multiqc", "--version"]}.items():
        runner(["sh", "-c", f'"$@" > {runner.work}/{tool}.version 2>&1', "sh", *argv])
        out[tool] = (runner.work / f"{tool}.version").read_text().strip()
    runner(["python3", "-c", "import genomics_steps.ingest"])
    return {"tools": out}


CHECKS = {"rnaseq": run_rnaseq, "germline": run_germline, "gwas": run_gwas, "ingest": run_ingest}


def science_problems(name: str, result: dict) -> list[str]:
    if name == "rnaseq" and result["spearman"] < 0.9:
        return [f"rnaseq: salmon's TPM correlate {result['spearman']:.3f} with the truth (want >= 0.9)"]
    if name == "germline" and result["recall"] < 0.9:
        return [f"germline: recall of the planted SNVs is {result['recall']:.3f} (want >= 0.9)"]
    if name == "gwas":
        wrong = {t: result["top"].get(t, {}) for t, v in result["truth"].items()
                 if str(result["top"].get(t, {}).get("variant_id")) != v}
        return [f"gwas: the planted variant of {t} does not rank first: {w}" for t, w in wrong.items()]
    return []


def comparison_problems(name: str, host: dict, image: dict) -> list[str]:
    problems = []
    if host["tools"] != image["tools"]:
        problems.append(f"{name}: tool versions differ: host {host['tools']}, image {image['tools']}")
    for key in ("fastp", "records", "top_hits", "matrices"):
        if key in host and host[key] != image[key]:
            problems.append(f"{name}: {key} differs between the host run and the image run")
    if "tpm" in host:
        # salmon's inference is not bit-reproducible run to run, even on one host (seen: 0.014% between two host
        # runs, 0.05% host vs image): the same transcripts, every TPM above 1 within 1%
        if set(host["tpm"]) != set(image["tpm"]):
            problems.append(f"{name}: salmon quantified different transcripts on the host and in the image")
        else:
            far = [t for t, v in host["tpm"].items() if v > 1 and abs(image["tpm"][t] - v) > 0.01 * v]
            if far:
                problems.append(f"{name}: {len(far)} TPM(s) differ by more than 1% from the host run's: {far[:5]}")
    return problems


def check(names: list[str], builder: str, tag: str, compare_host: bool, work: Path) -> tuple[list[str], dict]:
    problems: list[str] = []
    results: dict = {}
    for name in names:
        started = time.monotonic()
        image = f"localhost/genomics-{name}:{tag}" if builder == "buildah" else f"genomics-{name}:{tag}"
        log(f"checking {image}: real steps inside it")
        results[name] = {"image": CHECKS[name](Runner(image, builder, work / name / "image"))}
        problems += science_problems(name, results[name]["image"])
        if compare_host:
            results[name]["host"] = CHECKS[name](Runner("host", builder, work / name / "host"))
            problems += comparison_problems(name, results[name]["host"], results[name]["image"])
        results[name]["seconds"] = round(time.monotonic() - started, 1)
    return problems, results


# --- shipping --------------------------------------------------------------------------------------------------


def push(names: list[str], builder: str, tag: str, registry: str) -> list[str]:
    pushed = []
    for name in names:
        local = f"genomics-{name}:{tag}"
        remote = f"{registry.rstrip('/')}-{name}:{tag}"
        if builder == "docker":
            run(["docker", "tag", local, remote])
            run(["docker", "push", remote])
        else:
            run(["buildah", "push", f"localhost/{local}", f"docker://{remote}"])
        pushed.append(remote)
    return pushed


JOB_DEFINITIONS = {"rnaseq": ["genomics-rnaseq", "genomics-step"], "germline": ["genomics-germline"],
                   "ingest": ["genomics-ingest"], "gwas": ["genomics-gwas"]}  # infra/genomics.yaml's, per image


def register(names: list[str], tag: str, registry: str, region: str | None, client=None) -> dict[str, str]:
    """A new revision of each job definition of each image: the active revision's settings with the image at
    ``tag``. Runs use the newest ACTIVE revision unless they pin one (job definition name:revision; regenie_image
    for GWAS); job_runs records the revision each job ran."""
    import boto3

    batch = client or boto3.client("batch", region_name=region)
    registered = {}
    for name, job_definition in ((n, d) for n in names for d in JOB_DEFINITIONS[n]):
        active = batch.describe_job_definitions(jobDefinitionName=job_definition, status="ACTIVE")["jobDefinitions"]
        if not active:
            raise SystemExit(f"no ACTIVE job definition {job_definition}: deploy infra/genomics.yaml first")
        current = max(active, key=lambda d: d["revision"])
        properties = dict(current["containerProperties"])
        properties["image"] = f"{registry.rstrip('/')}-{name}:{tag}"
        keep = {k: current[k] for k in ("parameters", "retryStrategy", "timeout", "tags", "propagateTags",
                                        "platformCapabilities") if k in current}
        answer = batch.register_job_definition(jobDefinitionName=job_definition, type=current["type"],
                                               containerProperties=properties, **keep)
        registered[job_definition] = f"{answer['jobDefinitionName']}:{answer['revision']}"
    return registered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, check, push and register the job images.")
    parser.add_argument("command", choices=["build", "check", "push", "register"])
    parser.add_argument("--only", nargs="+", choices=list(IMAGES), default=list(IMAGES))
    parser.add_argument("--builder", choices=["auto", "docker", "buildah"], default="auto")
    parser.add_argument("--tag", default=None, help="default: the git commit")
    parser.add_argument("--regenie", default="source", help="source, or a folder holding a regenie binary")
    parser.add_argument("--compare-host", action="store_true", help="check: also run on the host and compare")
    parser.add_argument("--work", default=None, help="check: folder for the check's lakes (default: a temp dir)")
    parser.add_argument("--registry", help="push/register: <account>.dkr.ecr.<region>.amazonaws.com/<deployment>")
    parser.add_argument("--region", default=None)
    args = parser.parse_args(argv)
    tag = args.tag or git_tag()
    if args.command == "build":
        seconds = build(args.only, pick_builder(args.builder), tag, args.regenie)
        log(f"built {', '.join(f'genomics-{n}:{tag} ({s} s)' for n, s in seconds.items())}")
        return 0
    if args.command == "check":
        builder = pick_builder(args.builder)
        with tempfile.TemporaryDirectory(prefix="images-check-") as tmp:
            problems, results = check(args.only, builder, tag, args.compare_host, Path(args.work or tmp))
        for name, result in results.items():
            log(f"{name}: checked in {result['seconds']} s; tools {result['image']['tools']}")
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if not args.registry:
        parser.error(f"{args.command} needs --registry")
    if args.command == "push":
        for remote in push(args.only, pick_builder(args.builder), tag, args.registry):
            log(f"pushed {remote}")
        return 0
    for job_definition, revision in register(args.only, tag, args.registry, args.region).items():
        log(f"registered {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
