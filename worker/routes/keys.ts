import { Hono } from "hono";
import type { AppEnv } from "../env.ts";

export const keyRoutes = new Hono<AppEnv>();
