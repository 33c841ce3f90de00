ALTER TABLE `api_keys` ADD `rpm_limit` integer;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `tpm_limit` integer;