"""TEMPLATE_TASK_ID of config/Set_Template_TaskID.ini: the template every amend task must follow."""

from pathlib import Path

from utils.ini_files import IniSchema, parse_int_setting, read_ini

TEMPLATE_CONFIG_FILE = "Set_Template_TaskID.ini"
TEMPLATE_SCHEMA: IniSchema = {"TEMPLATE_TASK": ("TEMPLATE_TASK_ID",)}


def read_template_task_id(config_dir: Path) -> int:
    ini = read_ini(Path(config_dir) / TEMPLATE_CONFIG_FILE, TEMPLATE_SCHEMA, required_sections=("TEMPLATE_TASK",))
    text = ini.value("TEMPLATE_TASK", "TEMPLATE_TASK_ID")
    return parse_int_setting(text or "", ini.where("TEMPLATE_TASK", "TEMPLATE_TASK_ID"), 1)
