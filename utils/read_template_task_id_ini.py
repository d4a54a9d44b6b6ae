"""TEMPLATE_TASK_ID of config/Set_Template_TaskID.ini: the template every amend task must follow."""

from pathlib import Path

from utils.ini_files import ini_value, parse_int_setting, read_ini

TEMPLATE_CONFIG_FILE = "Set_Template_TaskID.ini"


def read_template_task_id(config_dir: Path) -> int:
    path = Path(config_dir) / TEMPLATE_CONFIG_FILE
    text = ini_value(read_ini(path), path, "TEMPLATE_TASK", "TEMPLATE_TASK_ID")
    return parse_int_setting(text or "", f"{path}: [TEMPLATE_TASK] TEMPLATE_TASK_ID", 1)
