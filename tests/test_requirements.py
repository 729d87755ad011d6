"""requirements.txt and environment.yml must install the same pinned packages."""
import os
import re

from conftest import REPO


def pins_in_requirements():
    with open(os.path.join(REPO, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return {line for line in lines if line}


def pins_in_environment():
    with open(os.path.join(REPO, "environment.yml")) as f:
        text = f.read()
    pip_section = text.split("- pip:", 1)[1]
    return set(re.findall(r"^\s+- (\S+==\S+)\s*$", pip_section, flags=re.M)), text


def test_requirements_are_pinned():
    pins = pins_in_requirements()
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", p) for p in pins), pins
    names = {p.split("==")[0] for p in pins}
    assert {"tensorflow-cpu", "tensorboard", "numpy", "pillow", "matplotlib", "tqdm",
            "scikit-image", "scikit-learn", "pytest"} <= names


def test_environment_lists_the_same_packages_with_python_311():
    pins, text = pins_in_environment()
    assert pins == pins_in_requirements()
    assert re.search(r"^\s+- python=3\.11\s*$", text, flags=re.M)
