"""The wheel carries what the lab ships beside its code: the corpus, tokenizer and reference runs, the
recipes, the notebooks' sources and the dashboard's entry point, copied into `lab/shipped/` (lab.paths
finds them there when the package is not a checkout). Everything else is in pyproject.toml."""

from pathlib import Path
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ["app.py", ".streamlit/config.toml", "LICENSE", "data/README.md", "data/corpus.jsonl",
           "data/tokenizer.json", "data/tokenizer_config.json", "data/special_tokens_map.json",
           "data/generation_config.json", "data/claims.json", "data/claims.md", "data/runs/**/*",
           "data/sources/**/*", "recipes/*.yaml", "notebooks/*.py"]


class BuildWithShipped(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "lab" / "shipped"
        for pattern in SHIPPED:
            for path in sorted(root.glob(pattern)):
                if path.is_file():
                    dest = target / path.relative_to(root)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest)


setup(cmdclass={"build_py": BuildWithShipped})
