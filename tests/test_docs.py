"""The docs cite only code that exists.

npvae is read more than it is run, so a doc that names a function the code no longer has
sends a learner looking for nothing. This test reads README.md, benchmarks/README.md and
every docs/*.md, collects each backticked token and each link, and checks that what they
cite exists:

* ``npvae.x.y`` and ``module.func`` (``layers.Linear``, ``gradcheck.check_params``): imported
  and resolved with getattr;
* ``Class.method`` and ``Class.attribute``: on some class defined in npvae/, demos/,
  benchmarks/ or tests/ (inherited members and attributes set in ``__init__`` count);
* ``model.forward``, ``terms.loss``, ... : the attribute on the classes the variable stands
  for (:data:`VARIABLES`);
* ``name(...)``: a function, method or class defined in the code, or a Python builtin;
* ``path/to/file.py`` (and any file or folder path): the path exists;
  ``path/to/file.py: name, Class.method`` and ``tests/test_x.py::test_name``: each name is
  defined in that file; ``[`name`](../npvae/file.py)``: the name is defined in the linked
  file;
* a bare identifier: a CamelCase name must be a class of the code, any other name must
  occur in the code's text;
* every relative link and image target exists, and a ``#anchor`` into a .md file names one
  of its headings.

Backticked tokens that cite no code (shell commands, options, maths, quoted messages,
output files) are allowed by the explicit, commented :data:`ALLOWED` and
:data:`ALLOWED_PATTERNS`; any other token that cannot be resolved fails the test, naming
the file, the line and the token.

The README is also held to its job as the door: at most 230 lines, the install and test
commands CI runs, and the "Read the code in this order" tour. No doc speaks of "sessions".
"""

from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
import re
from functools import lru_cache
from pathlib import Path

import pytest

import npvae

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CODE_DIRS = ("npvae", "demos", "benchmarks", "tests")
README_MAX_LINES = 230

# ------------------------------------------------------------------------------------------
# The allow-list: backticked tokens that are not code references.
# ------------------------------------------------------------------------------------------

#: Exact tokens (after normalising "…" to "..." and "−" to "-"), each cited on purpose.
ALLOWED = {
    # maths written in code font, not calls of npvae functions
    "exp(logvar)", "sigma = exp(logvar/2)", "mu + exp(logvar) * eps", "logsumexp(log_w, axis=0) - log(k)",
    "sigmoid(l)", "1 - sigmoid(l)", "log(sigmoid(l))", "rel_error = max|a-b| / max(1e-8, |a|+|b|)",
    # files the demo and the benchmarks write (outputs, not part of the repository)
    "metrics.json", "checkpoint.npz", "result.json", "table.md",
    "benchmarks/results/tricks.json",
    # BLAS routines (tried for Adam and reverted), not npvae names
    "axpy", "scal",
    # the shell's view of a bad run: the demo's one-line error prefix
    "train_mnist.py: error: ...",
    # a file of another project (pytorch/examples), linked by URL
    "vae/main.py",
    # a file name pattern with a placeholder
    "tests/test_<model>.py",
}

#: Patterns of whole token classes, each with the reason it cites no code.
ALLOWED_PATTERNS = [
    # command lines: python/pip/pytest invocations and environment assignments before one
    (re.compile(r"^(python|pip|pytest|/usr/bin/\w+)\b"), "a shell command"),
    (re.compile(r"^[A-Z_]+=\S*( \S.*)?$"), "an environment assignment or a command after one"),
    # command-line options of the demo and the benchmarks, with or without a value
    (re.compile(r"^--[a-z][\w-]*([ :=].*)?$"), "a command-line option (or a message that starts with one)"),
    # a keyword argument named on its own ("eps=")
    (re.compile(r"^\w+=$"), "a keyword argument name"),
    # file-name globs ("t10k-*")
    (re.compile(r"^[\w.-]+\*$"), "a file-name glob"),
    # messages quoted from the code and cut short with "..."
    (re.compile(r"\S \.\.\.$"), "an abridged quoted message"),
    # a file extension on its own (".gz")
    (re.compile(r"^\.[a-z]+$"), "a file extension"),
    # paths outside the repository (the shared data folder, the user's folders, the kernel's /proc)
    (re.compile(r"^(\.\./shared/|~/|/path/to/|/proc/|that/folder)"), "a path outside the repository"),
    # error messages quoted from the code, abridged: "name: expected ..., got ...", "... <f> ..."
    (re.compile(r"(: expected |<[a-z]+>|\bgot\b|^could not |^training stopped|^interrupted |"
                r"^resume with|^mnist data not found|^Downloading failed|^To fix:|called before forward|"
                r"call forward\(|^dy: expected)"), "a quoted error message"),
    # mathematical expressions with absolute values |x|, never Python
    (re.compile(r"\|[^|]+\|"), "maths with absolute values"),
]

#: Variables the docs use in examples, and the classes whose attributes they name.
VARIABLES = {
    "model": ("VAE", "AE", "CVAE", "DirichletVAE", "IWAE", "FlowVAE"),
    "terms": ("Terms",),
    "likelihood": ("Likelihood", "Bernoulli", "Gaussian", "GaussianLearned"),
    "opt": ("Optimizer", "Adam", "AdamW", "SGD"),
    "optimizer": ("Optimizer", "Adam", "AdamW", "SGD"),
    "trainer": ("Trainer",),
    "net": ("Sequential", "MLP"),
    "encoder": ("MLP",),
    "decoder": ("MLP",),
    "checkpoint": ("Checkpoint",),
    "self": (),  # any class of npvae
    "x": ("numpy.ndarray",),
    "W": ("numpy.ndarray",),
    "rng": ("numpy.random.Generator",),
}

#: Module aliases the docs use (``dist.reparameterize``).
MODULE_ALIASES = {"dist": "npvae.distributions", "D": "npvae.distributions"}

#: Libraries whose attributes are resolved when installed (torch, jax, optax are optional).
EXTERNAL = {"np": "numpy", "numpy": "numpy", "scipy": "scipy", "math": "math", "torch": "torch",
            "nn": "torch.nn", "jax": "jax", "optax": "optax"}

FILE_SUFFIXES = (".py", ".md", ".png", ".json", ".toml", ".npz", ".gz", ".txt", ".cfg")

# ------------------------------------------------------------------------------------------
# The code, indexed once.
# ------------------------------------------------------------------------------------------


def _code_files():
    for d in CODE_DIRS:
        for path in sorted((REPO / d).rglob("*.py")):
            if path.resolve() != Path(__file__).resolve():
                yield path


@lru_cache(maxsize=None)
def _npvae_modules() -> dict:
    """Every npvae module, imported: name -> module."""
    mods = {"npvae": npvae}
    for info in pkgutil.walk_packages(npvae.__path__, "npvae."):
        mods[info.name] = importlib.import_module(info.name)
    return mods


def _self_attributes(tree) -> dict:
    """Class name -> names assigned as ``self.<name>`` in its body (AST of one file)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names = out.setdefault(node.name, set())
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
                        and isinstance(sub.value, ast.Name) and sub.value.id == "self"):
                    names.add(sub.attr)
    return out


@lru_cache(maxsize=None)
def _ast_index() -> dict:
    """Everything read from the source files' ASTs.

    ``defined``: every function, method and class name; ``files``: relative path -> (top-level
    names, class name -> member names); ``classes``: class name -> member names (merged over
    files, bases' members included); ``self_attrs``: class name -> attributes set on self.
    """
    defined, files, classes, bases, self_attrs = set(), {}, {}, {}, {}
    for path in _code_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top, members = set(), {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                top.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            top.add(n.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                top.update((a.asname or a.name).split(".")[0] for a in node.names)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            if isinstance(node, ast.ClassDef):
                names = set()
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        names.add(item.name)
                    elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                        for t in (item.targets if isinstance(item, ast.Assign) else [item.target]):
                            if isinstance(t, ast.Name):
                                names.add(t.id)
                members[node.name] = names
                classes.setdefault(node.name, set()).update(names)
                bases.setdefault(node.name, set()).update(b.id for b in node.bases if isinstance(b, ast.Name))
        for cls, names in _self_attributes(tree).items():
            self_attrs.setdefault(cls, set()).update(names)
            classes.setdefault(cls, set()).update(names)
        files[path.relative_to(REPO).as_posix()] = (top, members)
    for cls in list(classes):  # members of base classes defined in the code (a few levels)
        seen, todo = set(), list(bases.get(cls, ()))
        while todo:
            b = todo.pop()
            if b in seen or b not in classes:
                continue
            seen.add(b)
            classes[cls] |= classes[b]
            todo.extend(bases.get(b, ()))
    return {"defined": defined, "files": files, "classes": classes, "self_attrs": self_attrs}


@lru_cache(maxsize=None)
def _corpus() -> str:
    """The text of every code file (comments and strings included), for bare identifiers."""
    return "\n".join(p.read_text(encoding="utf-8") for p in _code_files())


@lru_cache(maxsize=None)
def _npvae_classes() -> dict:
    """Class name -> the npvae classes of that name (imported, so inherited members resolve)."""
    out = {}
    for mod in _npvae_modules().values():
        for obj in vars(mod).values():
            if isinstance(obj, type) and obj.__module__.startswith("npvae"):
                out.setdefault(obj.__name__, set()).add(obj)
    return out


@lru_cache(maxsize=None)
def _repo_files() -> tuple:
    skip = {".git", ".hypothesis", ".pytest_cache", "__pycache__", "npvae.egg-info", ".benchmarks"}
    return tuple(p.relative_to(REPO).as_posix() for p in REPO.rglob("*")
                 if not skip.intersection(p.relative_to(REPO).parts))


# ------------------------------------------------------------------------------------------
# Resolving one reference.
# ------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _model_instances() -> dict:
    """A tiny instance of each model class (their attributes are set by shared helpers, not on self)."""
    import numpy as np
    from npvae.models import MODELS, build_model

    sizes = {"hvae": {"z_dims": (2, 2), "hidden": ((3,), (3,))}}
    extra = {"cvae": {"n_classes": 3}, "conv": {"image_shape": (1, 2, 2), "channels": (2,)}}
    return {cls: build_model(kind, x_dim=4, rng=np.random.default_rng(0),
                             **sizes.get(kind, {"z_dim": 2, "hidden": (3,)}), **extra.get(kind, {}))
            for kind, cls in MODELS.items()}


def _class_has(cls: type, name: str) -> bool:
    """A member, a dataclass field, an attribute set on self anywhere in cls's MRO, or a model instance's."""
    if hasattr(cls, name) or name in getattr(cls, "__dataclass_fields__", {}):
        return True
    attrs = _ast_index()["self_attrs"]
    if any(name in attrs.get(c.__name__, ()) for c in cls.__mro__):
        return True
    return cls in _model_instances() and hasattr(_model_instances()[cls], name)


def _on_classes(class_names, rest: list) -> bool:
    """``rest[0]`` is an attribute of one of the classes named (npvae's imported, the others' ASTs)."""
    if not rest:
        return True
    index = _ast_index()["classes"]
    npvae_classes = _npvae_classes()
    if not class_names:  # "self": any class of the code
        class_names = set(npvae_classes) | set(index)
    for cname in class_names:
        if "." in cname:  # a library's class, e.g. numpy.ndarray
            if _import_chain(cname.split(".") + rest[:1]):
                return True
            continue
        for cls in npvae_classes.get(cname, ()):
            if _class_has(cls, rest[0]) and _getattr_chain(cls, rest) is not False:
                return True
        if rest[0] in index.get(cname, ()) and len(rest) == 1:
            return True
    return False


def _getattr_chain(obj, rest: list):
    """getattr along ``rest``; True once an instance attribute (not on the class) ends the walk."""
    for i, name in enumerate(rest):
        if isinstance(obj, type) and not hasattr(obj, name):
            return True if _class_has(obj, name) and i == len(rest) - 1 else False
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return obj


def _import_chain(parts: list) -> bool:
    """``a.b.c.d``: import the longest module prefix, getattr the rest."""
    for i in range(len(parts), 0, -1):
        try:
            mod = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        return _getattr_chain(mod, parts[i:]) is not False
    return False


def resolve_dotted(parts: list) -> bool:
    """Whether the dotted name ``parts`` names something in the code (see the module docstring)."""
    first, rest = parts[0], parts[1:]
    submodules = {name.split(".")[1] for name in _npvae_modules() if name.count(".") == 1}
    if first == "npvae":
        return _import_chain(parts)
    if first in MODULE_ALIASES and _import_chain(MODULE_ALIASES[first].split(".") + rest):
        return True
    if first in submodules and _import_chain(["npvae", *parts]):
        return True
    if (first in _npvae_classes() or first in _ast_index()["classes"]) and _on_classes({first}, rest):
        return True
    if first in VARIABLES and _on_classes(set(VARIABLES[first]), rest):  # e.g. checkpoint.meta
        return True
    if first in EXTERNAL:
        try:
            importlib.import_module(EXTERNAL[first])
        except ImportError:
            return True  # an optional library that is not installed here: cannot check, not wrong
        return _import_chain([EXTERNAL[first], *rest])
    return False


def resolve_name(name: str) -> bool:
    """A bare identifier: a class of the code if CamelCase, else a word of the code's text."""
    if hasattr(builtins, name) or name in EXTERNAL or name in VARIABLES:
        return True
    if name[0].isupper() and any(c.islower() for c in name):
        return name in _npvae_classes() or name in _ast_index()["classes"]
    if name == "npvae" or name in _ast_index()["defined"]:
        return True
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", _corpus()) is not None


def resolve_in_file(rel: str, name: str) -> bool:
    """``name`` (``f``, ``Class.method``) is defined in the repository file ``rel``."""
    parts = name.strip().split(".")
    if rel.startswith("npvae/") and rel.endswith(".py"):
        mod = rel[:-3].replace("/", ".")
        mod = mod[: -len(".__init__")] if mod.endswith(".__init__") else mod
        return _import_chain(mod.split(".") + parts)
    top, members = _ast_index()["files"].get(rel, (set(), {}))
    if len(parts) == 1:
        return parts[0] in top
    return len(parts) == 2 and parts[1] in members.get(parts[0], set()) | _ast_index()["classes"].get(parts[0], set())


def path_exists(token: str, doc: Path) -> bool:
    """A file or folder path, relative to the doc, to the repository root, or as a path suffix."""
    clean = token.rstrip("/")
    if (doc.parent / clean).exists() or (REPO / clean).exists():
        return True
    return any(f == clean or f.endswith("/" + clean) for f in _repo_files())


# ------------------------------------------------------------------------------------------
# Checking one token, one file.
# ------------------------------------------------------------------------------------------

IDENT = r"[A-Za-z_]\w*"
DOTTED = re.compile(rf"^{IDENT}(\.{IDENT})*$")
HEAD = re.compile(rf"^({IDENT}(?:\.{IDENT})*)\(")
FILE_NAMES = re.compile(r"^([\w./-]+\.py)\s*(?::\s+|::)(.+)$")


def _normalise(token: str) -> str:
    token = re.sub(r"\s+", " ", token.strip())
    return token.replace("…", "...").replace("−", "-").replace("×", "*")


def _looks_like_path(token: str) -> bool:
    return (("/" in token and " " not in token and not token.startswith("-"))
            or token.endswith(FILE_SUFFIXES))


def _check_expression(token: str) -> str | None:
    """The dotted names and called names of a Python expression or statement; None if all resolve."""
    tree = ast.parse(token)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(parents.get(node), ast.Attribute):
            parts, cur = [], node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                dotted = [cur.id, *reversed(parts)]
                if not resolve_dotted(dotted):
                    return ".".join(dotted)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if not (hasattr(builtins, name) or name in _ast_index()["defined"]
                    or name in _npvae_classes()):
                return name + "("
    if isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Name) and len(tree.body) == 1:
        name = tree.body[0].value.id
        return None if resolve_name(name) else name
    return None


def check_token(raw: str, doc: Path, link: str | None = None) -> str | None:
    """None if ``raw`` (a backticked token of ``doc``) is allowed or cites existing code, else why not."""
    token = _normalise(raw)
    if not token or token in ALLOWED or any(p.search(token) for p, _ in ALLOWED_PATTERNS):
        return None
    if link is not None and link.endswith(".py") and DOTTED.match(token) and not token.startswith("npvae."):
        target = (doc.parent / link).resolve()
        try:
            rel = target.relative_to(REPO).as_posix()
        except ValueError:
            return f"link outside the repository: {link}"
        return None if resolve_in_file(rel, token) else f"not defined in {rel}"
    m = FILE_NAMES.match(token)
    if m:
        rel, names = m.group(1), m.group(2)
        if not (REPO / rel).is_file():
            return f"no file {rel}"
        bad = [n.strip() for n in names.split(",") if not resolve_in_file(rel, n.strip().rstrip("()"))]
        return f"not defined in {rel}: {', '.join(bad)}" if bad else None
    if _looks_like_path(token):
        return None if path_exists(token, doc) else "no such file or folder"
    try:
        bad = _check_expression(token)
    except SyntaxError:
        head = HEAD.match(token)
        if head is None:
            return "not code and not allow-listed (add it to ALLOWED with a reason, or fix it)"
        name = head.group(1)
        ok = resolve_dotted(name.split(".")) if "." in name else (
            hasattr(builtins, name) or name in _ast_index()["defined"] or name in _npvae_classes())
        return None if ok else f"{name} does not exist"
    return None if bad is None else f"{bad} does not exist"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(md: Path) -> set:
    return {_slug(line.lstrip("#")) for line in md.read_text(encoding="utf-8").splitlines() if line.startswith("#")}


def check_markdown(text: str, doc: Path) -> list[str]:
    """Every problem in the markdown ``text`` of ``doc``: "line N: `token`: why"."""
    problems = []
    # fenced code blocks are examples, run by their own tests; blank them, keeping line numbers
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    line_of = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731
    # links and images: the target exists; backticked names in a link to a .py are defined there
    linked = {}
    for m in re.finditer(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)", text):
        target = m.group(3)
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        if path:
            if not (doc.parent / path).exists():
                problems.append(f"line {line_of(m.start())}: link target {target}: no such file")
                continue
            if anchor and path.endswith(".md") and anchor not in _anchors(doc.parent / path):
                problems.append(f"line {line_of(m.start())}: link target {target}: no such heading")
        elif anchor and anchor not in _anchors(doc):
            problems.append(f"line {line_of(m.start())}: link target {target}: no such heading")
        for t in re.finditer(r"(`+)(.+?)\1", m.group(2), flags=re.S):
            linked[m.start(2) + t.start()] = path or None
    for m in re.finditer(r"(`+)(.+?)\1", text, flags=re.S):
        why = check_token(m.group(2), doc, linked.get(m.start()))
        if why is not None:
            problems.append(f"line {line_of(m.start())}: `{_normalise(m.group(2))}`: {why}")
    return problems


# ------------------------------------------------------------------------------------------
# The tests.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_code_reference_in_the_docs_exists(doc):
    problems = check_markdown(doc.read_text(encoding="utf-8"), doc)
    assert not problems, f"{doc.relative_to(REPO)} cites what the code does not have:\n" + "\n".join(problems)


STALE = """
[`GaussianHead.forward`](../npvae/models/parts.py) splits h; `kl_standard_normal(mu, logvar)`;
`npvae/models/elbo.py: backward`; `Adam._adam_update`; `npvae.vae.VAE`; `elbo.forward`;
`bernoulli_255(images)`; [`log_prob_fn`](../npvae/distributions.py); `npvae/vae.py`;
`model.log_prob_fn`; `VAE.head`; `npvae/models/vae.py: VAE.elbo`; `GaussianHead`;
![gone](figures/no_such_figure.png) [gone](models.md#no-such-heading)
`tests/test_vae.py::test_no_such_test`
"""

FRESH = """
[`split_mu_logvar`](../npvae/distributions.py) splits h; `gaussian_kl(mu, logvar)`;
`npvae/models/vae.py: VAE.forward, VAE.backward`; `Adam.step`; `npvae.models.VAE`; `optim.Adam`;
`binarize(images, rng=rng)`; [`Bernoulli.log_prob_grad`](../npvae/distributions.py); `npvae/models/vae.py`;
`model.forward_options`; `VAE.encoder`; `IWAE.log_weights`; `Terms`; `terms.loss`;
![fig](figures/samples.png) [steps](models.md#which-models-share-which-steps)
`tests/test_vae.py::test_full_model_gradient_elementwise` `--epochs` `pip install -e ".[test]"`
"""


def test_the_check_fails_on_stale_names_and_passes_on_current_ones():
    """Each stale citation of the refactor is reported; the same citations made current pass."""
    doc = REPO / "docs" / "scratch.md"  # not written: only its folder matters, for relative links
    problems = check_markdown(STALE, doc)
    for stale in ("GaussianHead.forward", "kl_standard_normal(mu, logvar)", "npvae/models/elbo.py: backward",
                  "Adam._adam_update", "npvae.vae.VAE", "elbo.forward", "bernoulli_255(images)", "log_prob_fn",
                  "npvae/vae.py", "model.log_prob_fn", "VAE.head", "npvae/models/vae.py: VAE.elbo", "GaussianHead",
                  "figures/no_such_figure.png", "models.md#no-such-heading",
                  "tests/test_vae.py::test_no_such_test"):
        assert any(stale in p for p in problems), f"{stale!r} was not reported; problems: {problems}"
    assert check_markdown(FRESH, doc) == []


def test_readme_is_a_short_door_with_the_ci_commands_and_the_tour():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    assert 'pip install -e ".[test]"' in text  # .ci/run installs exactly this
    commands = [line.split("#")[0].strip() for line in lines]
    assert "pytest" in commands, "the plain `pytest` command, as CI runs it, is missing"
    assert "python demos/train_mnist.py" in commands
    assert any(re.match(r"^#+ .*Read the code in this order", line) for line in lines)
    tour = text[text.index("Read the code in this order"):]
    tour = tour[: tour.index("\n## ")]
    for cited in ("npvae/models/vae.py", "VAE.forward", "VAE.backward", "npvae/distributions.py",
                  "npvae/layers.py", "npvae/optim.py", "Adam.step", "npvae/data.py", "minibatches",
                  "npvae/train.py", "Trainer.fit", "npvae/evaluate.py", "tests/test_vae.py", "npvae/gradcheck.py"):
        assert cited in tour, f"the tour does not name {cited}"


def test_every_allowed_token_is_still_cited():
    """The allow-list holds only what the docs use: an entry no doc cites any more is removed."""
    cited = set()
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        cited.update(_normalise(m.group(2)) for m in re.finditer(r"(`+)(.+?)\1", text, flags=re.S))
    assert not ALLOWED - cited, f"allow-listed but cited nowhere: {sorted(ALLOWED - cited)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_doc_speaks_of_sessions(doc):
    hits = [i for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1) if "session" in line.lower()]
    assert not hits, f"{doc.relative_to(REPO)}: 'session' on line(s) {hits}; name the commit and the machine"
