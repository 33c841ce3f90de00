CREATE TABLE `miner_nonces` (
	`miner_id` text NOT NULL,
	`nonce` text NOT NULL,
	`expires_at` integer NOT NULL,
	PRIMARY KEY(`miner_id`, `nonce`)
);
--> statement-breakpoint
CREATE INDEX `miner_nonces_expiry_idx` ON `miner_nonces` (`expires_at`);--> statement-breakpoint
DROP INDEX `chutes_name_unique`;--> statement-breakpoint
ALTER TABLE `chutes` ADD `gpu_count` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chutes` ADD `min_vram_mb` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `chutes` ADD `gpu_types` text DEFAULT '[]' NOT NULL;--> statement-breakpoint
ALTER TABLE `chutes` ADD `deleted_at` integer;--> statement-breakpoint
ALTER TABLE `chutes` ADD `updated_at` integer;--> statement-breakpoint
CREATE UNIQUE INDEX `chutes_live_name_idx` ON `chutes` (`name`) WHERE deleted_at IS NULL;--> statement-breakpoint
CREATE INDEX `chutes_owner_idx` ON `chutes` (`owner_account_id`);--> statement-breakpoint
ALTER TABLE `miners` DROP COLUMN `token_hash`;