import subprocess
import sys


def test_import_slimship_does_not_import_torch():
    code = "import sys, slimship, slimship.recipe, slimship.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
