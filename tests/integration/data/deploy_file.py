"""pyinfra deploy used by the lab tests: one file on every host."""

from io import StringIO

from pyinfra.operations import files

files.put(
    name="Lab marker file",
    src=StringIO("deployed-by-pyinfra\n"),
    dest="/etc/baomi-lab-marker",
    mode="644",
)
