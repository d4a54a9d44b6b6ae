"""The run history: one record per run of main.py (DRS_Amend.Run_History), typed and read defensively."""
