import { Hono } from "hono";
import type { AppEnv } from "../env.ts";

export const adminRoutes = new Hono<AppEnv>();
