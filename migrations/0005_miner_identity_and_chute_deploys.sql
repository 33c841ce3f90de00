ALTER TABLE `miners` ADD `coldkey` text;--> statement-breakpoint
ALTER TABLE `miners` ADD `uid` integer;--> statement-breakpoint
ALTER TABLE `miners` ADD `source` text DEFAULT 'admin' NOT NULL;--> statement-breakpoint
ALTER TABLE `miners` ADD `gpus` text DEFAULT '[]' NOT NULL;--> statement-breakpoint
ALTER TABLE `miners` ADD `accepts_offers` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `miners` ADD `session_id` text;