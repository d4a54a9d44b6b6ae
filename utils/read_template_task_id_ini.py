"""TEMPLATE_TASK_ID of config/Set_Template_TaskID.ini: the template every amend task must follow."""

from pathlib import Path

from utils.config import DEFAULT_CONFIG_DIR, TEMPLATE_CONFIG_FILE, ini_value, parse_int_setting, read_ini


def read_template_task_id(config_dir=DEFAULT_CONFIG_DIR):
    path = Path(config_dir) / TEMPLATE_CONFIG_FILE
    parser = read_ini(path)
    text = ini_value(parser, path, "TEMPLATE_TASK", "TEMPLATE_TASK_ID")
    return parse_int_setting(text, f"{path}: [TEMPLATE_TASK] TEMPLATE_TASK_ID", 1)
